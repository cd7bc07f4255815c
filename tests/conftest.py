"""Shared test fixtures: where the shared data and the shipped models live."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ACASXU = SHARED_DATA / "acasxu"
MODELS = REPO / "models"


@pytest.fixture(scope="session")
def acasxu_dir() -> Path:
    if not ACASXU.is_dir():
        pytest.skip(f"ACAS Xu data not found at {ACASXU}")
    return ACASXU
