"""Test fixtures: where the test data (copied into tests/data, sources in its READMEs) and the shipped models live.

The repository root goes on ``sys.path`` so test helpers import as ``tests.netgen`` from any working
directory. Tests run as ``pytest -n 2`` on two cores: one intra-op thread per worker avoids
oversubscription, which slows small tensor operations by two orders of magnitude.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
torch.set_num_threads(1)
ACASXU = REPO / "tests" / "data" / "acasxu"
MODELS = REPO / "models"


@pytest.fixture(scope="session")
def acasxu_dir() -> Path:
    if not ACASXU.is_dir():
        pytest.skip(f"ACAS Xu data not found at {ACASXU}")
    return ACASXU


def one_error_line(capsys) -> str:
    """The one line a user error prints on stderr (no traceback, nothing else)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]
