"""What the commands that decide properties hand back: an exit code per verdict, and a JSON report."""
from __future__ import annotations

import json

import numpy as np

from certprune.journal import write_atomic
from certprune.types import EXIT_CODES, Verdict


def exit_code(verdict: Verdict) -> int:
    return EXIT_CODES[verdict]


def write_json(path: str | None, payload: dict) -> None:
    if path:
        write_atomic(path, json.dumps(payload, indent=2, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Verdict):
        return value.value
    raise TypeError(type(value).__name__)
