"""Scale-out benchmark: the same work with --jobs local processes and on Dask with 1 and 2 workers.

Runs (each in a fresh process, wall time including start-up and cluster start):
  fairness: adult_medium against properties/adult_fairness.yaml (``--limit`` partitions, evenly spread);
  certify:  mnist_mlp_100x2 at eps 0.02 on the first ``--samples`` MNIST test images.
with ``--jobs 1``, ``--jobs 2``, ``--cluster local:1`` and ``--cluster local:2``, and checks that no item is
verified in one run and falsified in another (undecided ones may differ: timeouts depend on the load). Prints seconds per run and the ratios against ``--jobs`` on the same cores.

Usage: python benchmarks/cluster.py [--limit 2000] [--samples 200] [--timeout 20]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CERTPRUNE = [sys.executable, "-m", "certprune.cli.main"]


def run(args: list[str], out: Path) -> tuple[float, dict]:
    """Wall seconds and the verdict of each item (sample or partition) that was decided."""
    started = time.perf_counter()
    subprocess.run(CERTPRUNE + args + ["--json", str(out), "--quiet"], cwd=ROOT, check=False,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    report = json.loads(out.read_text())
    items = report.get("samples") or report.get("partitions")
    verdicts = {r.get("index", r.get("partition")): r.get("status", r.get("verdict")) for r in items}
    return seconds, {k: v for k, v in verdicts.items() if v in ("verified", "falsified")}


def conflicts(runs: list[dict]) -> int:
    """Items decided one way in one run and the other way in another (timeouts under load may differ)."""
    keys = set().union(*runs)
    return sum(1 for k in keys if len({run[k] for run in runs if k in run}) > 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=20.0)
    options = parser.parse_args()
    jobs = {"fairness": ["verify", "models/adult_medium.onnx", "--property", "properties/adult_fairness.yaml",
                         "--limit", str(options.limit)],
            "certify": ["certify", "models/mnist_mlp_100x2.onnx", "--data", "mnist", "--eps", "0.02",
                        "-n", str(options.samples), "--timeout", str(options.timeout)]}
    ways = {"--jobs 1": ["--jobs", "1"], "--jobs 2": ["--jobs", "2"], "dask 1 worker": ["--cluster", "local:1"],
            "dask 2 workers": ["--cluster", "local:2"]}
    with tempfile.TemporaryDirectory() as folder:
        for name, args in jobs.items():
            figures = {}
            for way, extra in ways.items():
                if name == "certify" and way.startswith("--jobs"):
                    extra = [] if way == "--jobs 1" else None  # certify has no --jobs: one process
                if extra is None:
                    continue
                seconds, counts = run(args + extra, Path(folder) / "out.json")
                figures[way] = (seconds, counts)
                print(f"{name:<9} {way:<15} {seconds:8.1f} s", flush=True)
            wrong = conflicts([verdicts for _, verdicts in figures.values()])
            decided = ", ".join(f"{way} {len(v)}" for way, (_, v) in figures.items())
            base = figures["--jobs 1"][0]
            ratios = ", ".join(f"{way} {base / s:.2f}x" for way, (s, _) in figures.items() if way != "--jobs 1")
            print(f"{name:<9} speed-up over --jobs 1: {ratios}; decided: {decided}; conflicting verdicts: {wrong}\n",
                  flush=True)


if __name__ == "__main__":
    main()
