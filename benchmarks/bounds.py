"""Time and tightness of IBP, CROWN and alpha-CROWN on ACAS Xu and MNIST-sized networks.

    .venv/bin/python benchmarks/bounds.py [--batches 1 64 1024] [--repeats 3] [--threads N]

Prints, per network and batch size, the wall time of each method (median over repeats, after a warm-up),
the mean output bound width, the mean number of unstable neurons per box, and the ratio of CROWN's time
to one plain forward pass of the same batch.
"""
from __future__ import annotations

import argparse
import glob
import math
import statistics
import time
from pathlib import Path

import torch

from certprune.bounds import CROWN, IBP, AlphaCROWN
from certprune.network import Dense, Network, ReLU

ROOT = Path(__file__).resolve().parents[1]
ACAS = ROOT / "tests" / "data" / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx"


def acas_network() -> Network:
    from certprune.onnx_io import load_onnx

    return load_onnx(ACAS)


def mnist_networks() -> dict[str, Network]:
    """The shipped MNIST models when they exist, else a random 784-100-100-10 network."""
    paths = sorted(glob.glob(str(ROOT / "models" / "mnist_mlp_*.onnx")))
    if paths:
        from certprune.onnx_io import load_onnx

        return {Path(p).stem: load_onnx(p) for p in paths}
    gen = torch.Generator().manual_seed(0)
    sizes, layers = [784, 100, 100, 10], []
    for n_in, n_out in zip(sizes, sizes[1:]):
        weight = torch.randn(n_out, n_in, generator=gen) * math.sqrt(2 / n_in)
        layers += [Dense(weight, 0.1 * torch.randn(n_out, generator=gen)), ReLU()]
    return {"random 784-100-100-10": Network(tuple(layers[:-1]), (784,))}


def acas_boxes(network: Network, batch: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (batch, *network.input_shape)
    center = torch.rand(shape, generator=gen) - 0.5
    radius = 0.01 + 0.04 * torch.rand((batch, *[1] * len(network.input_shape)), generator=gen)
    return center - radius, center + radius


def image_boxes(network: Network, batch: int, gen, eps: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    center = torch.rand((batch, *network.input_shape), generator=gen)
    return (center - eps).clamp(0, 1), (center + eps).clamp(0, 1)


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up: first calls pay for lazy initialisation
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run(name: str, network: Network, boxes, batches, repeats: int, methods) -> list[tuple]:
    rows = []
    for batch in batches:
        lower, upper = boxes(network, batch, torch.Generator().manual_seed(batch))
        forward, _ = timed(lambda: network((lower + upper) / 2), max(repeats, 5))
        for method in methods:
            reps = repeats if batch < 1024 or method.name != "alpha-crown" else 1
            seconds, bounds = timed(lambda: method.compute(network, lower, upper), reps)
            width = float((bounds.output_upper - bounds.output_lower).mean())
            unstable = sum(bounds.unstable_counts()) / batch
            rows.append((name, batch, method.name, seconds, width, unstable, seconds / forward))
    return rows


def tightness(networks: dict[str, Network], alpha_iterations: int, images: int = 32) -> None:
    """Mean output-bound width on real MNIST test images at eps 0.01 to 0.05, and the ratios between methods."""
    from certprune.data import load_mnist

    x = load_mnist("test")[0][:images]
    print(f"\ntightness on the first {images} MNIST test images (mean width of the logit bounds)")
    print(f"{'network':<24} {'eps':>5} {'IBP':>10} {'CROWN':>10} {'alpha':>10} {'CROWN/IBP':>10} {'alpha/CROWN':>12}")
    for name, network in networks.items():
        centre = x.reshape(len(x), *network.input_shape).float()
        for eps in (0.01, 0.02, 0.03, 0.05):
            lower, upper = (centre - eps).clamp(0, 1), (centre + eps).clamp(0, 1)
            widths = []
            for method in (IBP(), CROWN(), AlphaCROWN(iterations=alpha_iterations)):
                bounds = method.compute(network, lower, upper)
                widths.append(float((bounds.output_upper - bounds.output_lower).mean()))
            ibp, crown, alpha = widths
            print(f"{name:<24} {eps:>5g} {ibp:>10.4g} {crown:>10.4g} {alpha:>10.4g} {crown / ibp:>10.3f} "
                  f"{alpha / crown:>12.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--alpha-iterations", type=int, default=20)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = (IBP(), CROWN(), AlphaCROWN(iterations=args.alpha_iterations))
    rows = []
    if ACAS.exists():
        rows += run("ACAS Xu 1_1 (6x50)", acas_network(), acas_boxes, args.batches, args.repeats, methods)
    for name, network in mnist_networks().items():
        rows += run(name, network, image_boxes, args.batches, args.repeats, methods)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = f"{'network':<24} {'batch':>5} {'method':<12} {'seconds':>9} {'ms/box':>8} {'mean width':>11} " \
             f"{'unstable/box':>12} {'x forward':>10}"
    print(header)
    print("-" * len(header))
    for name, batch, method, seconds, width, unstable, ratio in rows:
        print(f"{name:<24} {batch:>5} {method:<12} {seconds:>9.4f} {1000 * seconds / batch:>8.3f} {width:>11.4g} "
              f"{unstable:>12.1f} {ratio:>10.0f}")
    tightness({k: v for k, v in mnist_networks().items() if not k.startswith("random")}, args.alpha_iterations)


if __name__ == "__main__":
    main()
