"""Make this folder's helpers (``fairnets``) importable; one intra-op thread per test worker."""
import sys
from pathlib import Path

import torch

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

torch.set_num_threads(1)
