"""VNN-COMP breadth benchmark: each instance in its own `certprune verify` process, answers checked.

Usage: python benchmarks/vnncomp.py BENCH_DIR [BENCH_DIR ...] [--timeout S | --timeout-scale F]
                                    [--only SUBSTRING] [--csv OUT.csv] [--nnenum PYTHON]
                                    [--arithmetic float32|real]

BENCH_DIR holds `instances.csv` (onnx, vnnlib, timeout_s, expected) and, for context, `published_2022.csv`
(e.g. ../shared/data/vnncomp/collins_rul_cnn). Per instance the process gets `--timeout` (default: the
competition's timeout times `--timeout-scale`); its wall time is measured from outside, start-up included.
A `sat` answer counts only if the counterexample in its results file passes the competition's own check
(onnxruntime on the file's inputs: inside the box and meeting the output constraints, within 1e-4).
Per benchmark it prints decided / wrong / total and median wall time, the worst overshoot of the timeout (wall
time minus timeout, and the time the command measured itself, from its start to its answer, minus timeout),
the instances one tool decides and the other does not, and the published alpha-beta-CROWN and nnenum figures
on the same instances (other machines: context only).
``--arithmetic real`` asks certprune to prove the real-valued network, as nnenum and alpha-beta-CROWN do
(default: the float32 model as onnxruntime runs it; see the README).
With ``--nnenum PYTHON`` (a Python with nnenum importable, e.g. a separate venv with its repository installed)
nnenum runs on the same instances in the same run as its own VNN-COMP scripts run it (BLAS on one thread, its
default of one worker process per core); its results
file has no counterexample, so its sat answers are taken on its word.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CERTPRUNE = [sys.executable, "-m", "certprune.cli.main"]
ATOL = 1e-4  # the competition's tolerance for a counterexample (inside the box, meeting the constraints)
DECIDED = ("sat", "unsat")


@dataclass
class Run:
    """One instance run by one tool."""

    name: str
    expected: str
    timeout: float
    result: str
    wall: float
    inside: float | None = None  # seconds the command measured itself (from its start), when it says
    note: str = ""

    @property
    def wrong(self) -> bool:
        return self.result in DECIDED and self.expected in DECIDED and self.result != self.expected

    @property
    def decided(self) -> bool:
        return self.result in DECIDED and not self.wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per instance (overrides the CSV)")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply the CSV's timeouts")
    parser.add_argument("--only", default=None, help="run only instances whose onnx or vnnlib name contains this")
    parser.add_argument("--csv", type=Path, default=None, help="write one row per instance and tool")
    parser.add_argument("--nnenum", default=None, help="a Python interpreter that can import nnenum")
    parser.add_argument("--arithmetic", choices=["float32", "real"], default="float32",
                        help="passed to certprune verify: prove the float32 model or the real-valued network")
    args = parser.parse_args()
    rows, summaries = [], []
    for bench in args.benchmarks:
        instances = read_csv(bench / "instances.csv")
        if args.only:
            instances = [r for r in instances if args.only in r["onnx"] or args.only in r["vnnlib"]]
        print(f"== {bench.name}: {len(instances)} instances", flush=True)
        tools = {"certprune": [], **({"nnenum": []} if args.nnenum else {})}
        for row in instances:
            timeout = args.timeout if args.timeout is not None else float(row["timeout_s"]) * args.timeout_scale
            runs = {"certprune": run_certprune(bench, row, timeout, args.arithmetic)}
            if args.nnenum:
                runs["nnenum"] = run_nnenum(args.nnenum, bench, row, timeout)
            for tool, run in runs.items():
                tools[tool].append(run)
                rows.append({"benchmark": bench.name, "tool": tool, **vars(run)})
            print("  " + "  ".join(f"{tool}: {describe(run)}" for tool, run in runs.items()), flush=True)
        summaries.append((bench, tools))
    print()
    for bench, tools in summaries:
        print_summary(bench, tools)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_certprune(bench: Path, row: dict, timeout: float, arithmetic: str = "float32") -> Run:
    name = f"{Path(row['onnx']).stem} {Path(row['vnnlib']).stem}"
    with tempfile.TemporaryDirectory() as tmp:
        results, report = Path(tmp) / "results.txt", Path(tmp) / "report.json"
        command = CERTPRUNE + ["verify", str(bench / row["onnx"]), "--property", str(bench / row["vnnlib"]),
                               "--timeout", f"{timeout:g}", "--results-file", str(results), "--json", str(report),
                               "--arithmetic", arithmetic, "--quiet"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if not results.exists():
            error = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return Run(name, row["expected"], timeout, "error", wall, note=error[:120])
        result, note = check_results_file(bench, row, results)
        inside, why = None, ""
        if report.exists():
            payload = json.loads(report.read_text())
            inside = payload.get("elapsed", payload.get("seconds"))
            why = open_reasons(payload.get("details", {}))
        return Run(name, row["expected"], timeout, result, wall, inside, note or why)


def open_reasons(details: dict) -> str:
    """The search's own account of an undecided answer (why domains stayed open), shortened."""
    boxes = details.get("boxes", [])
    reasons = [f"{b.get('decided_by', '')} {b.get('open', '')}".strip() for b in boxes if b.get("verdict")
               not in ("verified", "falsified")]
    return "; ".join(reasons)[:160]


def check_results_file(bench: Path, row: dict, path: Path, check: bool = True) -> tuple[str, str]:
    """The answer in a VNN-COMP results file; a sat whose counterexample fails the check becomes 'badcex'
    (unless ``check`` is off: nnenum's results file carries no counterexample, its sat is taken on its word)."""
    text = path.read_text().strip()
    word = text.split()[0] if text else "empty"
    word = {"violated": "sat", "holds": "unsat"}.get(word, word)
    if word != "sat" or not check:
        return word, ""
    ok, note = check_counterexample(bench / row["onnx"], bench / row["vnnlib"], text)
    return ("sat", "") if ok else ("badcex", note)


def check_counterexample(onnx_path: Path, vnnlib_path: Path, text: str) -> tuple[bool, str]:
    """The competition's check: X inside the box and onnxruntime's Y meeting some disjunct, within ATOL."""
    import onnxruntime as ort

    from certprune.spec.vnnlib import read_vnnlib

    values = {}
    for token in text.replace("(", " ").replace(")", " \n").splitlines():
        parts = token.split()
        if len(parts) == 2 and parts[0][:2] in ("X_", "Y_"):
            values[parts[0]] = float(parts[1])
    prop = read_vnnlib(vnnlib_path)
    n = prop.disjuncts[0].lower.size
    if any(f"X_{i}" not in values for i in range(n)):
        return False, "results file lacks some X_i"
    x = np.array([values[f"X_{i}"] for i in range(n)], dtype=np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in graph_input.shape]
    y = session.run(None, {graph_input.name: x.reshape(shape)})[0].ravel().astype(np.float64)
    for disjunct in prop.disjuncts:
        inside = np.all(x >= disjunct.lower - ATOL) and np.all(x <= disjunct.upper + ATOL)
        if inside and any(np.all(np.atleast_2d(A) @ y <= np.ravel(b) + ATOL) for A, b in disjunct.constraints):
            return True, ""
    return False, "counterexample fails the competition's check"


def run_nnenum(python: str, bench: Path, row: dict, timeout: float) -> Run:
    """nnenum's own VNN-COMP entry point (``python -m nnenum.nnenum ONNX VNNLIB TIMEOUT RESULTS``)."""
    name = f"{Path(row['onnx']).stem} {Path(row['vnnlib']).stem}"
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.txt"
        command = [python, "-m", "nnenum.nnenum", str(bench / row["onnx"]), str(bench / row["vnnlib"]),
                   f"{timeout:g}", str(results)]
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, text=True, env=nnenum_env())
        wall = time.perf_counter() - started
        if not results.exists():
            return Run(name, row["expected"], timeout, "error", wall)
        result, note = check_results_file(bench, row, results, check=False)
        return Run(name, row["expected"], timeout, result, wall, note=note)


def nnenum_env() -> dict:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def describe(run: Run) -> str:
    mark = "WRONG" if run.wrong else ("ok" if run.decided else "-")
    inside = f" (self {run.inside:.1f})" if run.inside is not None else ""
    note = f" [{run.note}]" if run.note else ""
    return f"{run.name}: {run.result} (expected {run.expected or '?'}) {mark} {run.wall:.1f}{inside}/{run.timeout:g} s{note}"


def print_summary(bench: Path, tools: dict[str, list[Run]]) -> None:
    runs0 = next(iter(tools.values()))
    published = published_figures(bench, {r.name: r.expected for r in runs0})
    print(f"{bench.name}:")
    for tool, runs in tools.items():
        decided = sum(r.decided for r in runs)
        wrong = sum(r.wrong for r in runs) + sum(r.result == "badcex" for r in runs)
        wall = sum(r.wall for r in runs)
        median = statistics.median(r.wall for r in runs) if runs else 0.0
        over = max((r.wall - r.timeout for r in runs), default=0.0)
        inside = [r.inside - r.timeout for r in runs if r.inside is not None]
        startup = [r.wall - r.inside for r in runs if r.inside is not None]
        inside_text = (f", measured by itself {max(inside):+.2f} s (start-up and exit up to {max(startup):.1f} s)"
                       if inside else "")
        print(f"  {tool:<10} decided {decided}/{len(runs)}, wrong {wrong}, total wall {wall:.1f} s, "
              f"median {median:.2f} s, worst overshoot {over:+.2f} s{inside_text}")
    if len(tools) == 2:
        (a, runs_a), (b, runs_b) = tools.items()
        for (one, mine), (other, theirs) in (((a, runs_a), (b, runs_b)), ((b, runs_b), (a, runs_a))):
            only = [f"{r.name} ({r.expected}, {t.wall:.0f} s)" for r, t in zip(mine, theirs)
                    if t.decided and not r.decided]
            if only:
                print(f"  decided by {other} only ({len(only)}): " + "; ".join(only))
    for tool, (solved, seconds) in published.items():
        print(f"  {tool + ' (2022)':<24} solved {solved}/{len(runs0)}, {seconds:.1f} s "
              "(published, another machine)")


def published_figures(bench: Path, expected: dict[str, str]) -> dict[str, tuple[int, float]]:
    """Correct answers and their summed seconds of alpha-beta-CROWN and nnenum in the competition."""
    path = bench / "published_2022.csv"
    if not path.exists():
        return {}
    rows = {f"{Path(r['onnx']).stem} {Path(r['vnnlib']).stem}": r for r in read_csv(path)}
    out = {}
    for tool in ("alpha_beta_crown", "nnenum"):
        solved, seconds = 0, 0.0
        for name, answer in expected.items():
            row = rows.get(name, {})
            if row.get(f"{tool}_result") in DECIDED and row[f"{tool}_result"] == answer:
                solved += 1
                seconds += float(row[f"{tool}_s"])
        out[tool] = (solved, seconds)
    return out


if __name__ == "__main__":
    main()
