"""Append-only JSONL journals: long runs record each finished item so an interrupted run can resume."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from certprune.errors import CertpruneError


class Journal:
    """One JSON object per line, flushed and fsynced as each item finishes.

    A header line (``{"journal": ..., "settings": ...}``) ties the journal to one question; resuming
    with a journal written for different settings is refused rather than silently mixing results.
    """

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.header = dict(header)

    def records(self) -> list[dict[str, Any]]:
        """The finished items already in the journal (empty if it does not exist)."""
        if not self.path.exists():
            return []
        lines = list(self._lines())
        if not lines:
            return []
        head, *rest = lines
        if head.get("journal") != self.header:
            raise CertpruneError(
                f"journal {self.path} was written for other settings; remove it or pick another file")
        return rest

    def start(self, resume: bool) -> list[dict[str, Any]]:
        """Open for appending; with ``resume`` return what is already done, else start afresh."""
        if resume:
            self._drop_torn_tail()
        done = self.records() if resume else []
        if not resume or not self.path.exists() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w") as f:
                f.write(json.dumps({"journal": self.header}) + "\n")
        return done

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _drop_torn_tail(self) -> None:
        """Cut a last line that a crash left unfinished, so that records appended now start on a line of
        their own (every complete record ends in a newline)."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def _lines(self) -> Iterator[dict[str, Any]]:
        with self.path.open() as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    # A crash can cut the last line short; everything before it stays valid.
                    if number > 1:
                        return
                    raise CertpruneError(f"journal {self.path} is not a certprune journal (line 1)")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "value"):
        return value.value
    raise TypeError(f"cannot write {type(value).__name__} to a journal")
