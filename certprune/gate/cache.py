"""The gate's result cache: a finished check's result, keyed by everything it depends on.

The key is the sha256 of the check's journal header: the kind of check, the sha256 of the model and of the
property or data slice, the check's settings and the certprune version (``certprune.journal``). Re-gating an
unchanged model reads the results back; a changed model, property, data or setting is a new key. While a
check runs, its samples or partitions go to a journal under the same key, so a gate killed mid-way resumes
where it stopped. Results of checks cut short by a budget are not stored.
"""
from __future__ import annotations

import json
from pathlib import Path

from certprune.journal import Journal, content_sha256, write_atomic

DEFAULT_FOLDER = ".certprune-cache"


class ResultCache:
    """``folder`` None disables caching (every check runs, nothing is written)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else Path(folder)

    def key(self, header: dict) -> str:
        return content_sha256(header)

    def get(self, header: dict) -> dict | None:
        if self.folder is None:
            return None
        path = self.folder / f"{self.key(header)}.json"
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return stored.get("result") if stored.get("header") == json.loads(json.dumps(header)) else None

    def put(self, header: dict, result: dict) -> None:
        if self.folder is not None:
            write_atomic(self.folder / f"{self.key(header)}.json",
                         json.dumps({"header": header, "result": result}, indent=1) + "\n")

    def journal(self, header: dict) -> Journal | None:
        if self.folder is None:
            return None
        return Journal(self.folder / f"{self.key(header)}.jsonl", header)
