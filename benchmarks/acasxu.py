"""ACAS Xu development subset: verdict, expected answer and seconds for each of the 36 instances.

Usage: python benchmarks/acasxu.py [--instances tests/data/acasxu/instances.csv] [--timeout S]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from certprune.bab.batch import run_batch

DEFAULT = Path(__file__).resolve().parents[1] / "tests" / "data" / "acasxu" / "instances.csv"  # the dev 36


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default=str(DEFAULT))
    parser.add_argument("--timeout", type=float, default=None, help="override the per-instance timeout")
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"{'network':<10} {'prop':<6} {'result':<8} {'expected':<9} {'ok':<3} {'seconds':>8}")
    rows = []
    for r in run_batch(args.instances, timeout_override=args.timeout):
        rows.append(r)
        net = Path(r["onnx"]).stem.replace("ACASXU_run2a_", "").replace("_batch_2000", "")
        print(f"{net:<10} {Path(r['vnnlib']).stem:<6} {r['result']:<8} {r['expected']:<9} "
              f"{'yes' if r['correct'] else 'NO':<3} {r['seconds']:>8.2f}", flush=True)
    seconds = [r["seconds"] for r in rows]
    undecided = sum(r["result"] in ("unknown", "timeout") for r in rows)
    print(f"\n{len(rows)} instances: {sum(r['correct'] for r in rows)} correct, {undecided} undecided, "
          f"{sum(not r['correct'] and r['result'] in ('sat', 'unsat') for r in rows)} WRONG")
    print(f"seconds per instance: median {statistics.median(seconds):.2f}, mean {statistics.mean(seconds):.2f}, "
          f"max {max(seconds):.2f}; total {time.perf_counter() - started:.1f} s wall")


if __name__ == "__main__":
    main()
