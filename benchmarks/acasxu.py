"""ACAS Xu development subset: verdict, expected answer and seconds for each of the 36 instances.

Usage: python benchmarks/acasxu.py [--instances tests/data/acasxu/instances.csv] [--timeout S]
       python benchmarks/acasxu.py --profile NET:PROP [--instances CSV] [--timeout S]   (e.g. 3_3:prop_1)

``--profile`` runs one instance in this process under cProfile (CPU time) and prints where the time went:
imports, loading, the falsifier, each bound method, input-split and ReLU-split batches, the branching
heuristic and the MILP (cumulative, so nested phases overlap), then the functions with most own time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "tests" / "data" / "acasxu" / "instances.csv"  # the dev 36

# phase -> (file, function) whose cumulative time it is; nested phases overlap (bounds run inside batches)
PHASES = {
    "load ONNX": ("onnx_io.py", "load_onnx"),
    "falsifier rounds": ("attack.py", "round"),
    "input-split batches": ("search.py", "_box_batch"),
    "ReLU-split batches": ("search.py", "_pattern_batch"),
    "  IBP": ("ibp.py", "run"),
    "  CROWN": ("crown.py", "run"),
    "  alpha/beta-CROWN": ("alpha.py", "run"),
    "  branching: input dims (look-ahead bounds included)": ("branching.py", "choose_input_dims_sb"),
    "  branching: input dims of ReLU-split leaves": ("branching.py", "choose_input_dims"),
    "  branching: ReLUs": ("branching.py", "choose_relus"),
    "  candidates checked (forward + replay)": ("search.py", "confirm"),
    "  MILP leaves": ("search.py", "_milp_leaf"),
    "float error (MILP clearance)": ("rounding.py", "forward_error"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default=str(DEFAULT))
    parser.add_argument("--timeout", type=float, default=None, help="override the per-instance timeout")
    parser.add_argument("--profile", default=None, metavar="NET:PROP", help="profile one instance, e.g. 3_3:prop_1")
    args = parser.parse_args()
    if args.profile:
        profile(args.instances, args.profile, args.timeout)
    else:
        run_all(args.instances, args.timeout)


def run_all(instances: str, timeout: float | None) -> None:
    from certprune.bab.batch import run_batch
    from certprune.decide import decide_vnnlib

    started = time.perf_counter()
    print(f"{'network':<10} {'prop':<6} {'result':<8} {'expected':<9} {'ok':<3} {'seconds':>8}")
    rows = []
    for r in run_batch(instances, decide_vnnlib, timeout_override=timeout):
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


def profile(instances: str, which: str, timeout: float | None) -> None:
    import cProfile
    import pstats

    net, _, prop = which.partition(":")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `certprune verify` runs
    started = time.process_time()
    import torch

    from certprune.bab.batch import read_instances
    from certprune.bab.instances import verify_vnnlib
    from certprune.bab.search import SearchSettings

    imports = time.process_time() - started
    torch.set_num_threads(1)
    rows = [r for r in read_instances(instances)
            if Path(r["onnx"]).stem == f"ACASXU_run2a_{net}_batch_2000" and Path(r["vnnlib"]).stem == prop]
    if not rows:
        raise SystemExit(f"no instance {which} in {instances}")
    row = rows[0]
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    result = verify_vnnlib(row["onnx"], row["vnnlib"], SearchSettings(timeout=timeout or row["timeout"]))
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    boxes = result.settings.get("boxes", [{}])
    print(f"{which}: {result.verdict.value} (expected {row['expected'] or '?'}); CPU s: imports {imports:.2f}, "
          f"search {total:.2f}; {sum(b.get('domains', 0) for b in boxes)} domains, "
          f"decided by {boxes[-1].get('decided_by', '')!r}, open {boxes[-1].get('open', {})}")
    cumulative = {}
    for (file, _, function), (_, _, _, ct, _) in stats.stats.items():
        for phase, (name, func) in PHASES.items():
            if file.endswith(name) and function == func:
                cumulative[phase] = cumulative.get(phase, 0.0) + ct
    for phase in PHASES:
        if phase in cumulative:
            print(f"  {phase:<54} {cumulative[phase]:8.2f} s  {100 * cumulative[phase] / total:5.1f}%")
    print("  functions with most own time:")
    own = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:12]
    for (file, line, function), (_, calls, tt, _, _) in own:
        print(f"    {tt:7.2f} s {calls:>9} calls  {Path(file).name}:{line} {function}")


if __name__ == "__main__":
    main()
