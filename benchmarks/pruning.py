"""Pruning for verifiability: dense vs stability vs magnitude vs random at 50% and 80% neuron sparsity.

Every variant gets the same fine-tuning budget (the dense one too), once plain and once with the RS
stability regulariser, then is measured on the first N test samples at the model's eps: clean accuracy
(whole test split), unstable ReLUs per box (CROWN), certified accuracy by CROWN and by CROWN then
alpha-CROWN on what CROWN left, the seconds those bounds took, and the branch-and-bound verifier's
certified accuracy and seconds (per-sample timeout; ``--bounds-only`` skips it).

Usage: python benchmarks/pruning.py [--samples 100] [--rs-lambda L ...] [--rs-bounds ibp|crown] [--bounds-only]
                                   [--timeout S] [--only NAME]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from certprune.bounds import CROWN, AlphaCROWN
from certprune.onnx_io import load_onnx, save_onnx
from certprune.prune import FinetuneSettings, PruneData, certified, load_data, predict, prune

MODELS = Path(__file__).resolve().parents[1] / "models"
METHODS = ("magnitude", "stability", "random")
SPARSITIES = (0.5, 0.8)


@dataclass(frozen=True)
class Setup:
    """One model, its data set and radius (pixels for MNIST, share of each feature's domain for tables)."""

    model: str
    data: str
    eps: float
    epochs: int
    batch_size: int


SETUPS = (Setup("mnist_mlp_100x2", "mnist", 0.02, 3, 64), Setup("german_small", "german", 0.02, 20, 32))


def complete_verification(network, data: PruneData, timeout: float) -> tuple[int, int, float]:
    """Samples the branch-and-bound verifier proves robust on their boxes, those it leaves undecided
    (unknown or timeout), and the seconds it took."""
    from certprune.bab.instances import Instance, verify_one
    from certprune.bab.search import SearchSettings
    from certprune.spec.robustness import robustness_property
    from certprune.types import Verdict

    n_logits = math.prod(network.output_shape)
    lower, upper = (t.numpy().astype(np.float64) for t in data.boxes())
    verified, undecided, started = 0, 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "net.onnx"
        save_onnx(network, path)
        with torch.no_grad():
            predicted = predict(network(data.x))
        for i in range(len(data)):
            label = int(data.y[i])
            if int(predicted[i]) != label:
                continue
            constraints = robustness_property(lower[i], upper[i], label, n_logits).disjuncts[0].constraints
            instance = Instance(f"sample{i}", lower[i].ravel(), upper[i].ravel(), constraints)
            result = verify_one(network, path, instance, SearchSettings(timeout=timeout))
            verified += result.verdict is Verdict.VERIFIED
            undecided += result.verdict in (Verdict.UNKNOWN, Verdict.TIMEOUT)
    return verified, undecided, time.perf_counter() - started


def balanced_accuracy(network, data: PruneData) -> float:
    """Mean recall over the classes present: a constant classifier scores 1 / classes, whatever the majority."""
    with torch.no_grad():
        predicted = predict(network(data.x))
    return float(np.mean([(predicted[data.y == c] == c).float().mean() for c in torch.unique(data.y)]))


def evaluate(result, test: PruneData, args) -> dict:
    sample = test.take(args.samples)
    started = time.perf_counter()
    by_crown = certified(result.network, sample, (CROWN(),))
    crown_seconds = time.perf_counter() - started
    by_alpha = certified(result.network, sample, (CROWN(), AlphaCROWN(iterations=args.alpha_iterations)))
    row = {"params": result.after.parameters, "units": result.after.units, "accuracy": result.after.accuracy,
           "balanced": balanced_accuracy(result.network, test),
           "unstable": result.after.unstable, "crown": float(by_crown.float().mean()), "crown_s": crown_seconds,
           "alpha": float(by_alpha.float().mean()), "alpha_s": time.perf_counter() - started - crown_seconds}
    if not args.bounds_only:
        verified, undecided, seconds = complete_verification(result.network, sample, args.timeout)
        row.update(bab=verified / len(sample), undecided=undecided, bab_s=seconds)
    return row


def run_setup(setup: Setup, rs_lambda: float, args) -> list[dict]:
    network = load_onnx(MODELS / f"{setup.model}.onnx")
    train, test = load_data(setup.data, "train", setup.eps), load_data(setup.data, "test", setup.eps)
    settings = FinetuneSettings(epochs=setup.epochs, batch_size=setup.batch_size, rs_lambda=rs_lambda,
                                rs_bounds=args.rs_bounds)
    variants = [("dense", "magnitude", 0.0)] + [(m, m, s) for s in SPARSITIES for m in METHODS]
    rows = []
    for label, method, sparsity in variants:
        started = time.perf_counter()
        result = prune(network, method, sparsity, train, finetune=settings, eval_data=test, eval_boxes=args.samples)
        row = {"model": setup.model, "rs": rs_lambda, "method": label, "sparsity": sparsity,
               "prune_s": time.perf_counter() - started}
        row.update(evaluate(result, test, args))
        rows.append(row)
        print(_line(row, not args.bounds_only), flush=True)
    return rows


HEADER = (f"{'model':<16} {'rs':>4} {'method':<10} {'sparse':>6} {'params':>7} {'relus':>5} {'acc':>6} {'bal':>6} {'unstab':>7} "
          f"{'cert-C':>6} {'C s':>5} {'cert-aC':>7} {'aC s':>6}")


def _line(r: dict, complete: bool) -> str:
    text = (f"{r['model']:<16} {r['rs']:>4g} {r['method']:<10} {r['sparsity']:>6.0%} {r['params']:>7} {r['units']:>5} "
            f"{r['accuracy']:>6.1%} {r['balanced']:>6.1%} {r['unstable']:>7.1f} {r['crown']:>6.0%} {r['crown_s']:>5.2f} "
            f"{r['alpha']:>7.0%} {r['alpha_s']:>6.2f}")
    if complete:
        text += f" {r['bab']:>8.0%} {r['undecided']:>5} {r['bab_s']:>6.1f}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100, help="test samples for stability and certification")
    parser.add_argument("--rs-lambda", type=float, nargs="+", default=[0.0, 1.0],
                        help="RS regulariser weights; every variant is fine-tuned once with each")
    parser.add_argument("--rs-bounds", choices=["ibp", "crown"], default="ibp", help="bounds of the RS loss")
    parser.add_argument("--alpha-iterations", type=int, default=20)
    parser.add_argument("--bounds-only", action="store_true", help="skip the branch-and-bound verifier")
    parser.add_argument("--timeout", type=float, default=5.0, help="branch-and-bound seconds per sample")
    parser.add_argument("--only", choices=[s.model for s in SETUPS], default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 for comparable timings)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(HEADER + ("" if args.bounds_only else f" {'cert-BaB':>8} {'undec':>5} {'BaB s':>6}"))
    for setup in SETUPS:
        for rs_lambda in args.rs_lambda:
            if args.only in (None, setup.model):
                run_setup(setup, rs_lambda, args)
    print(f"\neps: mnist {SETUPS[0].eps} (pixels), german {SETUPS[1].eps} of each feature's domain; "
          f"fine-tuning epochs: mnist {SETUPS[0].epochs}, german {SETUPS[1].epochs}, the same for every variant")
    print("acc / bal = test accuracy / balanced accuracy; rs = RS regulariser weight in fine-tuning; unstab = unstable ReLUs per box (CROWN); cert-C / cert-aC = "
          "certified accuracy by CROWN / CROWN then alpha-CROWN on the rest; C s / aC s = their seconds; "
          f"cert-BaB / undec / BaB s = the branch-and-bound verifier's certified accuracy, samples left unknown or "
          f"timed out, seconds ({args.timeout:g} s per sample)")
    print(f"total {time.perf_counter() - started:.0f} s wall")


if __name__ == "__main__":
    main()
