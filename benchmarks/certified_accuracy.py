"""Certified accuracy of the shipped MNIST MLPs: the first N test images at several L-inf radii.

For each model and eps: verified (with the count CROWN alone proves beside it), falsified, unknown or
timeout, misclassified, and the total time. Each image is appended to a journal under --out as soon as it
is decided, so an interrupted run continues where it stopped.

``--images 3,17,42`` runs only those of the first N images (a sample, e.g. the ones branch and bound has to
decide); the totals then count only them.

Usage: python benchmarks/certified_accuracy.py [--models M ...] [--eps E ...] [-n 100] [--images I,J,..]
       [--timeout 60] [--threads T]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from certprune.bab.certify import certify
from certprune.bab.search import SearchSettings
from certprune.data import load_mnist
from certprune.journal import Journal
from certprune.onnx_io import load_onnx
from certprune.spec.robustness import RobustnessInstance

MODELS = Path(__file__).resolve().parents[1] / "models"


def samples(network, x, y, eps, timeout, images):
    return [RobustnessInstance(i, x[i], int(y[i]), np.clip(x[i] - eps, 0.0, 1.0), np.clip(x[i] + eps, 0.0, 1.0),
                               timeout) for i in images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnist_mlp_100x2", "mnist_mlp_256x3"])
    parser.add_argument("--eps", nargs="+", type=float, default=[0.01, 0.02, 0.05])
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--images", default="", help="comma-separated indices among the first N (default: all)")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--out", default="benchmark-results/certified", help="journal folder")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a SearchSettings field, e.g. relu_lookahead=5 (repeatable)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    defaults = SearchSettings()
    try:
        fields = {k: type(getattr(defaults, k))(v) for k, v in (item.split("=", 1) for item in args.set)}
    except (ValueError, AttributeError) as error:
        parser.error(f"--set: {error}")
    x, y = load_mnist("test")
    x, y = x[: args.n].numpy().astype(np.float64), y[: args.n].numpy()
    images = [int(i) for i in args.images.split(",")] if args.images else range(args.n)
    if any(not 0 <= i < args.n for i in images):
        parser.error(f"--images must lie in 0..{args.n - 1}")
    print(f"{'model':<16} {'eps':>5} {'verified':>9} {'by CROWN':>9} {'falsified':>10} {'unknown':>8} "
          f"{'misclass.':>10} {'seconds':>8}", flush=True)
    for name in args.models:
        path = MODELS / f"{name}.onnx"
        network = load_onnx(path)
        pixels = x.reshape(len(x), *network.input_shape)
        for eps in args.eps:
            header = {"model": name, "eps": eps, "n": args.n, "timeout": args.timeout, "images": args.images,
                      **({"settings": args.set} if args.set else {})}
            journal = Journal(Path(args.out) / f"{name}_eps{eps:g}.jsonl", header)
            started = time.perf_counter()
            report = certify(network, path, samples(network, pixels, y, eps, args.timeout, images),
                             SearchSettings(timeout=args.timeout, **fields), journal=journal, resume=True)
            t = report.totals()
            print(f"{name:<16} {eps:>5g} {t['verified']:>9} {t['crown_verified']:>9} {t['falsified']:>10} "
                  f"{t['unknown'] + t['timeout']:>8} {t['misclassified']:>10} {report.seconds:>8.1f}"
                  f"   (wall {time.perf_counter() - started:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
