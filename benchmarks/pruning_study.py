"""The certified-pruning study (issue 15): training regimes x pruning methods x sparsities x seeds.

For every setup (model architecture, data, eps), regime (natural, adversarial FGSM, certified CROWN-IBP) and
seed, each method runs the reference's lottery protocol (``certprune.prune.protocol``): a seeded random
initialisation of the architecture, round 0 trains the dense network, then every round removes a share of the
remaining hidden units (11% in the full run), rewinds the survivors to their initial weights and trains again.
Methods: ``magnitude`` (L1 norm of a unit's weights, per layer), ``random`` (global), ``slimming`` (a per-unit
scale trained with an L1 penalty of 1e-4, global), ``nrs`` (the NRS criterion with the NRS regulariser,
global), optionally ``nrs-layer`` (the same ranked within each layer), ``stability`` (the project's criterion:
tanh(1 + l u) on CROWN bounds with dead units first, per layer, plain training) and ``unstructured`` (global
weight magnitude, 20% of the weights per round; its sparsity is of weights). ``dense`` is round 0 of the magnitude run (plain training) and ``dense+nrs`` round 0 of the NRS
run (trained with the NRS regulariser, not pruned).

Every reported network (round 0 and the rounds of ``--report-rounds``) is verified completely on the first N
test images at the setup's eps with the same per-sample budget (``certprune.certify``: attack, CROWN, alpha-CROWN,
branch and bound, MILP; counterexamples replayed with onnxruntime): certified accuracy, falsified, undecided
(unknown or timeout); with clean accuracy on the whole test split, unstable ReLUs per box (CROWN), nonzero
parameters, FLOPs and verification seconds. Rows go to ``OUT/rows.jsonl`` as they finish (``--resume`` skips
the runs already there) and each network's result to ``OUT/certify/*.json`` in the shape of ``certprune
certify --json`` (the input of ``certprune report``). ``--summary`` prints the table: per regime, method and
sparsity the mean over seeds with a 95% Student-t interval, and the paired difference to the same seed's
dense network.

Usage: python benchmarks/pruning_study.py [--quick] [--setups mnist_mlp_100x2] [--regimes R ...]
                                          [--methods M ...] [--seeds 0 1 2] [--epochs E] [--samples N]
                                          [--timeout S] [--out DIR] [--resume] [--summary [--plot PNG]]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from certprune.onnx_io import load_onnx, save_onnx
from certprune.prune import (
    NRS, BatchNormScale, Magnitude, Random, Stability, fold_unit_scales, load_data, measure, prune_units,
    prune_weights, unfold_batchnorm,
)
from certprune.prune import protocol

MODELS = Path(__file__).resolve().parents[1] / "models"
REGIMES = ("natural", "adversarial", "certified")
METHODS = ("magnitude", "random", "slimming", "nrs")
# NRS ranked per layer instead of globally; the project's own stability criterion (CROWN bounds, dead units
# first, per layer); the reference's l1unstruct.
EXTRA = ("nrs-layer", "stability", "unstructured")


@dataclass(frozen=True)
class Setup:
    """An architecture (a shipped model's; its weights are not used), its data and radius (pixels for MNIST, a
    share of each feature's domain for tables)."""

    model: str
    data: str
    eps: float
    batch_size: int = 64


SETUPS = {s.model: s for s in (Setup("mnist_mlp_100x2", "mnist", 0.02), Setup("mnist_mlp_256x3", "mnist", 0.02),
                               Setup("mnist_cnn_bn", "mnist", 0.02), Setup("german_small", "german", 0.02, 32),
                               Setup("adult_small", "adult", 0.02, 256))}


def criterion(method: str, seed: int):
    return {"magnitude": Magnitude(), "random": Random(seed=seed), "slimming": BatchNormScale(), "nrs": NRS(),
            "nrs-layer": NRS(), "stability": Stability()}[method]


def run_method(setup: Setup, regime: str, method: str, seed: int, args, done: set, out: Path) -> None:
    """One lottery run; verifies and writes a row for every reported round not yet in ``done``."""
    wanted = [0] + list(args.report_rounds) if method in ("magnitude", "nrs") else list(args.report_rounds)
    if all((setup.model, regime, method, seed, r) in done for r in wanted):
        return
    path = MODELS / f"{setup.model}.onnx"
    network = load_onnx(path)
    gammas = BatchNormScale.from_onnx(path).gammas
    if gammas or method == "slimming":
        network = unfold_batchnorm(network)  # a trained per-unit scale, starting at 1 (the weights are re-drawn)
    train, test = load_data(setup.data, "train", setup.eps), load_data(setup.data, "test", setup.eps)
    base = "nrs" if method == "nrs-layer" else method
    settings = protocol.training(regime, args.epochs, base, seed=seed, batch_size=setup.batch_size)
    options = {"rate": args.rate} if args.quick else {}
    schedule = protocol.lottery(base, **options, **({"scope": "layer"} if method == "nrs-layer" else {}))
    target = 1 - (1 - schedule.rate) ** max(args.report_rounds)
    rounds = []
    started = time.perf_counter()
    if method == "unstructured":
        prune_weights(network, target, train, schedule, settings, rounds.append)
    else:
        prune_units(network, criterion(method, seed), target, train, schedule, settings, rounds.append)
    train_seconds = time.perf_counter() - started
    for round_ in rounds:
        if round_.index in wanted and (setup.model, regime, method, seed, round_.index) not in done:
            label = ("dense" if method == "magnitude" else "dense+nrs") if round_.index == 0 else method
            row = {"setup": setup.model, "eps": setup.eps, "regime": regime, "method": label, "run": method,
                   "seed": seed, "round": round_.index, "sparsity": round(round_.sparsity, 4),
                   "train_seconds": round(train_seconds, 1), "epochs": args.epochs}
            row.update(evaluate(fold_unit_scales(round_.network), test, setup, args, out, row))
            with open(out / "rows.jsonl", "a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(_line(row), flush=True)


def evaluate(network, test, setup: Setup, args, out: Path, row: dict) -> dict:
    """Clean accuracy, CROWN's unstable ReLUs, size, and complete verification of the first N test boxes."""
    from certprune.bab.certify import certify_data

    stats = measure(network, test, args.samples)
    sample = test.take(args.samples)
    name = f"{row['setup']}-{row['regime']}-{row['method']}-s{row['seed']}-r{row['round']}"
    folder = out / "certify"
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"{name}.onnx"
    save_onnx(network, onnx_path)
    started = time.perf_counter()
    report = certify_data(str(onnx_path), sample.x.numpy(), sample.y.numpy(), setup.eps, lower=sample.lower,
                          upper=sample.upper, timeout=args.timeout)
    seconds = time.perf_counter() - started
    totals = report.totals()
    records = [{k: v for k, v in r.items() if not k.startswith("counterexample")} for r in report.records]
    (folder / f"{name}.json").write_text(json.dumps(
        {"model": str(onnx_path), "data": setup.data, "eps": setup.eps, "timeout": args.timeout, "totals": totals,
         "samples": records}))
    n = totals["samples"]
    return {"accuracy": stats.accuracy, "parameters": stats.parameters, "flops": stats.flops, "units": stats.units,
            "unstable": stats.unstable, "crown": stats.certified, "certified": totals["verified"] / n,
            "falsified": totals["falsified"] / n, "undecided": (totals["unknown"] + totals["timeout"]) / n,
            "misclassified": totals["misclassified"] / n, "verify_seconds": round(seconds, 2), "samples": n}


def _line(r: dict) -> str:
    return (f"{r['setup']:<16} {r['regime']:<11} {r['method']:<11} s{r['seed']} r{r['round']:<2} "
            f"{r['sparsity']:>5.0%} acc {r['accuracy']:.3f} cert {r['certified']:.2f} fals {r['falsified']:.2f} "
            f"und {r['undecided']:.2f} unst {r['unstable']:6.1f} par {r['parameters']:>6} "
            f"vs {r['verify_seconds']:6.1f} ts {r['train_seconds']:6.1f}")


# ---------------------------------------------------------------------------------------------- summary

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
FIGURES = ("accuracy", "certified", "falsified", "undecided", "unstable", "parameters", "flops", "verify_seconds")


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (nan for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def summarise(rows: list[dict], rounds: list[int] | None = None) -> str:
    """A Markdown table per setup: mean +- 95% half-width over seeds, and the paired change of certified
    accuracy against the same seed's dense network; only the rows of ``rounds`` (and round 0) when given."""
    rows = [r for r in rows if rounds is None or r["round"] in rounds or r["round"] == 0]
    dense = {(r["setup"], r["regime"], r["seed"]): r["certified"] for r in rows if r["method"] == "dense"}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["setup"], r["regime"], r["method"], r["round"]), []).append(r)
    order = {m: i for i, m in enumerate(("dense", "dense+nrs") + METHODS + EXTRA)}
    lines = []
    for setup in sorted({k[0] for k in groups}):
        lines += [f"\n**{setup}** (eps {rows[0]['eps'] if rows else ''}; mean +- 95% interval over seeds)\n",
                  "| regime | method | sparsity | seeds | clean acc | certified | vs dense | falsified | undecided "
                  "| unstable/box | params | FLOPs | verify s |", "|" + "---|" * 13]
        keys = sorted((k for k in groups if k[0] == setup),
                      key=lambda k: (REGIMES.index(k[1]), k[3], order.get(k[2], 99)))
        for key in keys:
            members = groups[key]
            cells = {f: interval([float(m[f]) for m in members]) for f in FIGURES}
            paired = [m["certified"] - dense[(m["setup"], m["regime"], m["seed"])] for m in members
                      if (m["setup"], m["regime"], m["seed"]) in dense and m["method"] != "dense"]
            change = _pm(*interval(paired), percent=True, signed=True) if paired else ""
            lines.append(
                f"| {key[1]} | {key[2]} | {members[0]['sparsity']:.0%} | {len(members)} | "
                f"{_pm(*cells['accuracy'], percent=True)} | {_pm(*cells['certified'], percent=True)} | {change} | "
                f"{_pm(*cells['falsified'], percent=True)} | {_pm(*cells['undecided'], percent=True)} | "
                f"{_pm(*cells['unstable'])} | {cells['parameters'][0]:,.0f} | {cells['flops'][0]:,.0f} | "
                f"{_pm(*cells['verify_seconds'])} |")
    return "\n".join(lines)


def _pm(mean: float, half: float, percent: bool = False, signed: bool = False) -> str:
    scale, unit = (100, "") if percent else (1, "")
    sign = "+" if signed and mean >= 0 else ""
    if math.isnan(half):
        return f"{sign}{mean * scale:.1f}{unit}"
    return f"{sign}{mean * scale:.1f} ± {half * scale:.1f}{unit}"


def plot(rows: list[dict], path: Path) -> None:
    """Certified accuracy against sparsity, one panel per training regime, a line per method (mean over
    seeds with its 95% interval as error bars; dense networks at sparsity 0): the study at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"magnitude": "#0072B2", "random": "#999999", "slimming": "#009E73", "nrs": "#D55E00",
               "nrs-layer": "#CC79A7", "stability": "#E69F00", "unstructured": "#56B4E9"}  # Okabe-Ito
    setups = sorted({r["setup"] for r in rows})
    figure, axes = plt.subplots(len(setups), len(REGIMES), figsize=(4 * len(REGIMES), 3.2 * len(setups)),
                                squeeze=False, sharey=True)
    for row_axes, setup in zip(axes, setups):
        for ax, regime in zip(row_axes, REGIMES):
            mine = [r for r in rows if r["setup"] == setup and r["regime"] == regime]
            dense = interval([r["certified"] for r in mine if r["method"] == "dense"] or [math.nan])
            for method, colour in colours.items():
                points: dict[int, list[dict]] = {}
                for r in mine:
                    if r["method"] == method or (r["run"] == method and r["round"] == 0 and r["method"] == "dense"):
                        points.setdefault(r["round"], []).append(r)
                if len(points) < 2:
                    continue
                xs = [statistics.fmean(m["sparsity"] for m in points[k]) for k in sorted(points)]
                stats = [interval([m["certified"] for m in points[k]]) for k in sorted(points)]
                means = [100 * m for m, _ in stats]
                halves = [0.0 if math.isnan(h) else 100 * h for _, h in stats]
                below = [min(h, m) for m, h in zip(means, halves)]  # an interval stops at 0% and 100%
                above = [min(h, 100 - m) for m, h in zip(means, halves)]
                ax.errorbar(xs, means, yerr=[below, above], color=colour, marker="o", markersize=3, capsize=2,
                            linewidth=1.2, label=method)
            if not math.isnan(dense[0]):
                ax.axhline(100 * dense[0], color="black", linewidth=0.8, linestyle=":", label="dense")
            eps = mine[0]["eps"] if mine else ""
            ax.set_title(f"{setup}, {regime} (eps {eps})", fontsize=9)
            ax.set_xlabel("share of hidden units removed")
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
        row_axes[0].set_ylabel("certified accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


# ------------------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="minutes: 2 seeds, few epochs, 30%% per round, "
                        "2 rounds, 30 images, 2 s per image")
    parser.add_argument("--setups", nargs="+", choices=sorted(SETUPS), default=["mnist_mlp_100x2"])
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES))
    parser.add_argument("--methods", nargs="+", choices=METHODS + EXTRA, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (quick: 0 1)")
    parser.add_argument("--epochs", type=int, default=None, help="per round; default 20 (quick: 4)")
    parser.add_argument("--report-rounds", nargs="+", type=int, default=None,
                        help="rounds verified besides round 0; default 3 6 12 (29.5%%, 50.3%%, 75.3%% of the units; "
                             "quick: 1 2 at 30%% per round)")
    parser.add_argument("--rate", type=float, default=0.3, help="share removed per round in --quick")
    parser.add_argument("--samples", type=int, default=None, help="test images verified; default 100 (quick: 30)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per image; default 10 (quick: 2)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/certprune-study"))
    parser.add_argument("--resume", action="store_true", help="skip the rows already in OUT/rows.jsonl")
    parser.add_argument("--summary", action="store_true", help="only print the table of OUT/rows.jsonl")
    parser.add_argument("--summary-rounds", nargs="+", type=int, default=None, help="rounds the table shows")
    parser.add_argument("--plot", type=Path, default=None,
                        help="with --summary: also draw certified accuracy against sparsity to this image")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    quick = args.quick
    args.seeds = args.seeds or ([0, 1] if quick else [0, 1, 2])
    args.epochs = args.epochs or (4 if quick else 20)
    args.report_rounds = args.report_rounds or ([1, 2] if quick else [3, 6, 12])
    args.samples = args.samples or (30 if quick else 100)
    args.timeout = args.timeout or (2.0 if quick else 10.0)
    args.out.mkdir(parents=True, exist_ok=True)
    rows_path = args.out / "rows.jsonl"
    if args.summary:
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
        print(summarise(rows, args.summary_rounds))
        if args.plot:
            plot(rows, args.plot)
        return
    if rows_path.exists() and not args.resume:
        rows_path.unlink()
    done = set()
    if rows_path.exists():
        done = {(r["setup"], r["regime"], r["run"], r["seed"], r["round"])
                for r in map(json.loads, rows_path.read_text().splitlines()) if r}
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    for name in args.setups:
        for regime in args.regimes:
            for seed in args.seeds:
                for method in args.methods:
                    run_method(SETUPS[name], regime, method, seed, args, done, args.out)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    print(summarise(rows))
    print(f"\nepochs per round {args.epochs}; {args.samples} test images per network, {args.timeout:g} s each; "
          f"total {time.perf_counter() - started:.0f} s wall")


if __name__ == "__main__":
    main()
