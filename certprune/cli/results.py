"""What the commands that decide properties hand back: an exit code per verdict, and a JSON report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from certprune.types import EXIT_CODES, Verdict


def exit_code(verdict: Verdict) -> int:
    return EXIT_CODES[verdict]


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Verdict):
        return value.value
    raise TypeError(type(value).__name__)
