"""Fairness benchmark: the shipped fairness models against their properties, ``auto`` against a Fairify-style Z3.

For each model and property (Fairify's partitioning), both engines run on the same partitions: ``auto``
(bounds on the twin, search, splitting, MILP, Z3 fallback) and the baseline ``z3`` with interval (IBP) pruning
only, one Z3 query per partition, as Fairify does (but sound: exact rationals, counterexamples replayed).
Printed per engine: partitions falsified (SAT), certified (UNSAT) and undecided (UNKNOWN/timeout), seconds per
partition and in total, and the baseline-to-auto time ratio; answers of the two engines are cross-checked.

The Fairify benchmark's own models (GC-1..5, BM-1..8, Keras files in github.com/sumonbis/Fairify, converted to
ONNX outside the project) run with ``--model-dir DIR``: ``GC-*`` against the German property, ``BM-*`` against
the Bank property, ``AC-*`` against the Adult one. ``--engines auto`` skips the baseline.

Usage: python benchmarks/fairness.py [--timeout 30] [--limit 20] [--jobs 1] [--models german_small,...]
                                     [--model-dir DIR] [--engines auto,z3-ibp] [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from certprune.fairness.problem import FairnessSettings
from certprune.fairness.verify import verify_fairness
from certprune.types import Verdict

ROOT = Path(__file__).resolve().parents[1]
PAIRS = {  # model -> its properties
    "german_small": ("german_fairness", "german_fairness_sex"),
    "german_medium": ("german_fairness", "german_fairness_sex"),
    "adult_small": ("adult_fairness",),
    "adult_medium": ("adult_fairness",),
    "bank_small": ("bank_fairness",),
    "bank_medium": ("bank_fairness",),
}
FAIRIFY = {"GC": ("german_fairness",), "BM": ("bank_fairness",), "AC": ("adult_fairness",)}
ENGINES = {
    "auto": FairnessSettings(engine="auto"),
    "z3-ibp": FairnessSettings(engine="z3", bounds=("ibp",)),  # Fairify's method: interval pruning, then Z3
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per partition (default 30)")
    parser.add_argument("--limit", type=int, default=None, help="partitions per property, spread over the domain")
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes")
    parser.add_argument("--models", default=",".join(PAIRS), help="comma-separated model names")
    parser.add_argument("--model-dir", default=None, help="take the models from here (GC-*, BM-*, AC-* names)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines to run")
    parser.add_argument("--json", default=None, help="write all rows to this file")
    args = parser.parse_args()
    print(f"{'model':<14} {'property':<20} {'engine':<7} {'parts':>5} {'SAT':>5} {'UNSAT':>5} {'UNK':>5} "
          f"{'median s':>8} {'mean s':>8} {'total s':>8} {'ratio':>9}")
    rows = []
    models = args.models.split(",")
    if args.model_dir:
        models = [m for m in args.models.split(",") if (Path(args.model_dir) / f"{m}.onnx").exists()] \
            if args.models != ",".join(PAIRS) else sorted(p.stem for p in Path(args.model_dir).glob("*.onnx"))
    for model in models:
        for prop in PAIRS.get(model) or FAIRIFY[model[:2]]:
            rows += compare(model, prop, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def compare(model: str, prop: str, args) -> list[dict]:
    """Both engines on one model and property; one printed line each, then the cross-check."""
    reports = {}
    folder = Path(args.model_dir) if args.model_dir else ROOT / "models"
    for name in args.engines.split(","):
        settings = ENGINES[name]
        started = time.perf_counter()
        reports[name] = verify_fairness(folder / f"{model}.onnx", ROOT / "properties" / f"{prop}.yaml",
                                        settings=settings, timeout=args.timeout, limit=args.limit, jobs=args.jobs,
                                        progress=False)
        reports[name] = (reports[name], time.perf_counter() - started)
    rows = []
    auto_total = sum(p.seconds for p in reports["auto"][0].partitions) if "auto" in reports else 0.0
    for name, (report, wall) in reports.items():
        row = summarise(model, prop, name, report, wall)
        row["ratio"] = row["total_seconds"] / auto_total if auto_total else float("nan")
        row["ratio_is_lower_bound"] = name != "auto" and row["unknown"] > 0  # its undecided ones need longer
        rows.append(row)
        ratio = f"{'>=' if row['ratio_is_lower_bound'] else ''}{row['ratio']:.1f}x"
        print(f"{model:<14} {prop:<20} {name:<7} {row['partitions']:>5} {row['sat']:>5} {row['unsat']:>5} "
              f"{row['unknown']:>5} {row['median_seconds']:>8.3f} {row['mean_seconds']:>8.3f} "
              f"{row['total_seconds']:>8.1f} {ratio:>9}", flush=True)
    clashes = disagreements(reports["auto"][0], reports["z3-ibp"][0]) if len(reports) == 2 else []
    if clashes:
        print(f"  DISAGREEMENT on partitions {clashes}")
    return rows


def summarise(model: str, prop: str, engine: str, report, wall: float) -> dict:
    verdicts = [p.verdict for p in report.partitions]
    counts = report.counts()
    seconds = [p.seconds for p in report.partitions] or [0.0]
    return {"model": model, "property": prop, "engine": engine, "partitions": len(verdicts),
            "domain_partitions": report.total_partitions, "sat": verdicts.count(Verdict.FALSIFIED),
            "unsat": verdicts.count(Verdict.VERIFIED),
            "unknown": len(verdicts) - verdicts.count(Verdict.FALSIFIED) - verdicts.count(Verdict.VERIFIED),
            "median_seconds": statistics.median(seconds), "mean_seconds": statistics.mean(seconds),
            "total_seconds": sum(seconds), "wall_seconds": wall,
            "certified_share": counts["certified"]["share"], "falsified_share": counts["falsified"]["share"],
            "undecided_share": 1.0 - counts["certified"]["share"] - counts["falsified"]["share"]
            - counts["not run"]["share"], "selected_points": sum(p.points for p in report.partitions)}


def disagreements(a, b) -> list[int]:
    """Partitions one engine certified and the other falsified (must never happen)."""
    other = {p.index: p.verdict for p in b.partitions}
    decided = {Verdict.VERIFIED, Verdict.FALSIFIED}
    return [p.index for p in a.partitions
            if p.verdict in decided and other.get(p.index) in decided and other[p.index] != p.verdict]


if __name__ == "__main__":
    main()
