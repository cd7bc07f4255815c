"""Make tests/ importable so the shared generator ``netgen`` can be imported as a plain module.

Tests run as ``pytest -n 2`` on two cores: one intra-op thread per worker avoids oversubscription, which
slows small tensor operations by two orders of magnitude.
"""
import sys
from pathlib import Path

import torch

TESTS = str(Path(__file__).resolve().parents[1])
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

torch.set_num_threads(1)
