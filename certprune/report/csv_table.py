"""The report as CSV: one row per model, one column per figure, plain numbers (shares in [0, 1], seconds)."""
from __future__ import annotations

import csv
import io

from certprune.report.load import ModelResult
from certprune.report.summary import Row, check_names, robust_keys, summarize, undecided_share


def csv_report(models: list[ModelResult]) -> str:
    rows = summarize(models)
    records = [_record(row, rows) for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _record(row: Row, rows: list[Row]) -> dict:
    m = row.model
    record = {"model": m.name, "path": m.path, "sha256": m.sha256 or "", "baseline_only": m.baseline_only,
              "gate_outcome": m.outcome or "", "parameters": row.parameters, "flops": row.flops,
              "clean_accuracy": row.clean_accuracy,
              "clean_accuracy_samples": row.clean_accuracy_samples, "parity": row.parity}
    for data, eps in robust_keys(rows):
        entry = row.robust.get((data, eps)) or {}
        for figure in ("certified_accuracy", "falsified_share", "undecided_share", "samples", "seconds"):
            record[f"{data} eps={eps:g} {figure}"] = entry.get(figure)
    for name in check_names(rows, "fairness"):
        figures = row.fairness.get(name)
        record[f"fairness {name} holds"] = None if figures is None else figures.get("holds")
        for key in ("certified_share", "falsified_share"):
            record[f"fairness {name} {key}"] = None if figures is None else figures.get(key)
        record[f"fairness {name} undecided_share"] = None if figures is None else undecided_share(figures)
        record[f"fairness {name} partitions"] = None if figures is None else figures.get("partitions")
    for name in check_names(rows, "vnnlib"):
        record[f"vnnlib {name} verdict"] = (row.vnnlib.get(name) or {}).get("verdict")
    record["seconds"] = round(row.seconds, 3)
    return {key: "" if value is None else value for key, value in record.items()}
