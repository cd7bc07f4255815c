"""Batch mode over a VNN-COMP instances CSV (onnx, vnnlib, timeout[, expected]), journaled."""
from __future__ import annotations

import csv
import math
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

from certprune.bab.search import SearchSettings
from certprune.deadline import Deadline
from certprune.errors import CertpruneError, PropertyError
from certprune.journal import Journal, file_sha256, journal_header
from certprune.spec.text import read_text
from certprune.spec.vnnlib import VnnlibProperty, read_vnnlib
from certprune.types import Result

Decide = Callable[[str, VnnlibProperty, Deadline], Result]
RESULT_WORDS = {"verified": "unsat", "falsified": "sat", "unknown": "unknown", "timeout": "timeout"}
EXPECTED = ("sat", "unsat", "unknown", "timeout")  # the VNN-COMP answers an instances file may expect


def read_instances(path: str | Path) -> list[dict]:
    """Rows with absolute paths (relative ones are taken from the CSV's folder)."""
    path = Path(path)
    text = read_text(path, "instances file").splitlines()
    rows = []
    for line_number, row in enumerate(csv.reader(text), 1):
        if not row or row[0].strip().lower() == "onnx":
            continue
        if len(row) < 3:
            raise PropertyError(f"{path} line {line_number}: expected onnx,vnnlib,timeout; got {','.join(row)}")
        try:
            timeout = float(row[2])
        except ValueError:
            raise PropertyError(f"{path} line {line_number}: timeout {row[2]!r} is not a number") from None
        if not (math.isfinite(timeout) and timeout > 0):
            raise PropertyError(f"{path} line {line_number}: timeout {row[2]!r} is not a positive number")
        files = {"onnx": path.parent / row[0].strip(), "vnnlib": path.parent / row[1].strip()}
        for kind, file in files.items():
            if not file.is_file():  # before any row runs: a typo should not cost the rows above it
                raise PropertyError(f"{path} line {line_number}: {kind} file not found: {file}")
        expected = row[3].strip() if len(row) > 3 else ""
        if expected not in ("", *EXPECTED):
            raise PropertyError(f"{path} line {line_number}: expected answer {expected!r} is none of "
                                f"{', '.join(EXPECTED)} (or empty)")
        rows.append({"onnx": str(files["onnx"]), "vnnlib": str(files["vnnlib"]), "timeout": timeout,
                     "expected": expected})
    if not rows:  # a CI step over an empty list must not pass as if every instance had
        raise PropertyError(f"{path}: no instances (rows onnx,vnnlib,timeout[,expected])")
    return rows


def batch_header(path: str | Path, timeout_override: float | None) -> dict:
    """The journal header of a batch: the sha256 of the CSV and of every model and property it names (in
    row order, so a moved folder still resumes), the timeout override and the search settings."""
    digests: dict[str, str] = {}

    def sha(file: str, what: str) -> str:
        if file not in digests:
            digests[file] = file_sha256(file, what)
        return digests[file]

    rows = read_instances(path)
    search = asdict(SearchSettings())
    del search["timeout"]  # each row's own, or the override
    return journal_header("batch", {"instances": file_sha256(path, "instances file"),
                                    "model": [sha(r["onnx"], "model") for r in rows],
                                    "property": [sha(r["vnnlib"], "property file") for r in rows]},
                          {"timeout": timeout_override, "search": search})


def run_batch(path: str | Path, decide: Decide, journal: Journal | None = None, resume: bool = False,
              timeout_override: float | None = None, on_row: Callable[[dict], None] | None = None,
              cluster: str | None = None) -> Iterator[dict]:
    """Verify each instance with ``decide(onnx, property, deadline) -> Result`` (``certprune.decide.decide_vnnlib``
    for the CLI: the fast path, then this engine), yielding (and journaling) one record per instance: in row order
    here, as they finish on a Dask ``cluster``. Each record holds its ``row``, which keys the journal (the header
    pins the CSV's content), so a moved folder or an out-of-order run resumes."""
    rows = read_instances(path)
    done = {}
    if journal is not None:
        done = {r.get("row", i): r for i, r in enumerate(journal.start(resume))}
    for position, row in enumerate(rows):
        if position in done:
            yield _emit({**done[position], "onnx": row["onnx"], "vnnlib": row["vnnlib"]}, None, on_row)
    todo = [(position, row) for position, row in enumerate(rows) if position not in done]
    if cluster and todo:
        from certprune.cluster import connect, run_chunks

        with connect(cluster) as client:
            for record in run_chunks(client, _decide_rows, (timeout_override, decide), todo, size=1):
                yield _emit(record, journal, on_row)
        return
    for item in todo:
        yield _emit(_decide_row(item, timeout_override, decide), journal, on_row)


def _emit(record: dict, journal: Journal | None, on_row) -> dict:
    if journal is not None:
        journal.append(record)
    if on_row is not None:
        on_row(record)
    return record


def _decide_row(item: tuple[int, dict], timeout_override: float | None, decide: Decide) -> dict:
    """The row decided by ``decide`` (for the CLI, as ``certprune verify`` decides it); a model or property this
    row cannot use (an unsupported operator, a property of the wrong size) ends as result "error" with the
    message, and the batch goes on."""
    position, row = item
    timeout = timeout_override or row["timeout"]
    deadline = Deadline(timeout)
    record = {"row": position, **row, "timeout": timeout}
    try:
        result = decide(row["onnx"], read_vnnlib(row["vnnlib"]), deadline)
    except CertpruneError as error:
        return {**record, "verdict": "error", "result": "error", "seconds": round(deadline.elapsed(), 3),
                "correct": _agrees(row, "error"), "error": str(error)}
    word = RESULT_WORDS[result.verdict.value]
    return {**record, "verdict": result.verdict.value, "result": word, "seconds": round(result.seconds, 3),
            "correct": _agrees(row, word)}


def _agrees(row: dict, word: str) -> bool | None:
    """Whether the result is the row's expected answer; None (not known) when the row expects none."""
    return word == row["expected"] if row["expected"] else None


def _decide_rows(settings: tuple, items: list) -> list[dict]:
    """One Dask task: instances of the CSV, each in the worker process."""
    import torch

    torch.set_num_threads(1)
    timeout_override, decide = settings
    return [_decide_row(item, timeout_override, decide) for item in items]
