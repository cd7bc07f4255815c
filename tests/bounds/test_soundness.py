"""The contract every bound method keeps: sampled inputs (box corners included) never leave the bounds."""
from __future__ import annotations

import pytest
import torch

from certprune.bounds import CROWN, IBP, AlphaCROWN, Cascade
from certprune.network import Affine, Dense, Network, ReLU
from tests.netgen import random_graph, random_network

from .sampling import activations, sample_box, satisfies

METHODS = {
    "ibp": IBP(),
    "crown": CROWN(),
    "alpha": AlphaCROWN(iterations=5),
    "alpha-lower": AlphaCROWN(iterations=3, optimize_upper=False, beta=False),
    "alpha-intermediate": AlphaCROWN(iterations=3, intermediate_iterations=3),
    "cascade": Cascade(methods=(IBP(), CROWN(), AlphaCROWN(iterations=3))),
}

# (depth, width, input shape, conv, affine, dtype)
NETWORKS = {
    "dense-1x2": (1, 2, (2,), False, False, torch.float32),
    "dense-1x200": (1, 200, (12,), False, False, torch.float32),
    "dense-2x50-affine": (2, 50, (5,), False, True, torch.float32),
    "dense-3x20-flatten": (3, 20, (2, 3, 2), False, False, torch.float32),
    "dense-6x30-affine": (6, 30, (8,), False, True, torch.float32),
    "dense-6x200": (6, 200, (6,), False, False, torch.float32),
    "dense-4x16-f64": (4, 16, (3,), False, True, torch.float64),
    "conv-2x4": (2, 4, (2, 6, 6), True, False, torch.float32),
    "conv-3x6-affine": (3, 6, (1, 8, 8), True, True, torch.float32),
    "conv-6x8-affine": (6, 8, (3, 7, 7), True, True, torch.float32),
    "conv-4x5-f64": (4, 5, (2, 5, 5), True, True, torch.float64),
}
BATCH, SAMPLES = 3, 10_000


def _boxes(network, gen, dtype):
    shape = (BATCH, *network.input_shape)
    center = torch.rand(shape, generator=gen, dtype=dtype) * 2 - 1
    radius = torch.tensor([0.02, 0.2, 1.0], dtype=dtype).view(-1, *[1] * len(network.input_shape))
    radius = radius * torch.rand(shape, generator=gen, dtype=dtype)
    return center - radius, center + radius


def _spec(index: int, n_out: int, gen, dtype):
    if index % 3 == 0:
        return None
    if index % 3 == 1:
        return torch.randn(4, n_out, generator=gen, dtype=dtype)
    return torch.randn(BATCH, 4, n_out, generator=gen, dtype=dtype)


def random_splits(network, lower, upper, gen, per_box: int = 3):
    """Up to ``per_box`` splits on unstable neurons per box, signed as at a random point (so feasible)."""
    bounds = CROWN().compute(network, lower, upper)
    splits = [torch.zeros(s.shape, dtype=torch.int8) for s in bounds.pre_lower]
    for b in range(lower.shape[0]):
        point = sample_box(lower[b], upper[b], 5, gen)[-1:]
        pre, _ = activations(network, point)
        choices = [(i, j) for i in range(len(splits)) for j in torch.nonzero(bounds.unstable(i)[b].flatten()).flatten().tolist()]
        for k in torch.randperm(len(choices), generator=gen)[:per_box].tolist():
            i, j = choices[k]
            splits[i][b].view(-1)[j] = 1 if pre[i].flatten()[j] >= 0 else -1
    return splits


def _violation(values, lower, upper):
    return max(float((lower - values).max()), float((values - upper).max()))


@pytest.mark.parametrize("with_splits", [False, True], ids=["free", "splits"])
@pytest.mark.parametrize("config", list(NETWORKS), ids=list(NETWORKS))
@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_samples_never_escape(method, config, with_splits):
    depth, width, shape, conv, affine, dtype = NETWORKS[config]
    seed = list(NETWORKS).index(config)
    network = random_network(depth, width, shape, conv=conv, affine=affine, seed=seed, dtype=dtype)
    gen = torch.Generator().manual_seed(100 + seed)
    lower, upper = _boxes(network, gen, dtype)
    C = _spec(seed, network.output_shape[0], gen, dtype)
    splits = random_splits(network, lower, upper, gen) if with_splits else None
    _check(METHODS[method], network, lower, upper, C, splits, gen)


def _edge_networks():
    gen = torch.Generator().manual_seed(5)
    W, b = torch.randn(3, 4, generator=gen), torch.randn(3, generator=gen)
    return {
        "linear-only": Network((Dense(W, b),), (4,)),
        "relu-first-and-twice": Network((ReLU(), Dense(W, b), ReLU(), ReLU(), Dense(torch.randn(2, 3, generator=gen),
                                                                                   torch.zeros(2))), (4,)),
        "dense-dense-affine-last": Network((Dense(torch.randn(5, 4, generator=gen), torch.zeros(5)),
                                            Dense(torch.randn(3, 5, generator=gen), b), ReLU(),
                                            Affine(-torch.ones(3), torch.ones(3))), (4,)),
    }


@pytest.mark.parametrize("name", list(_edge_networks()))
@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_samples_never_escape_on_unusual_layouts(method, name):
    network = _edge_networks()[name]
    gen = torch.Generator().manual_seed(7)
    lower, upper = _boxes(network, gen, torch.float32)
    _check(METHODS[method], network, lower, upper, None, None, gen)


def _check(method, network, lower, upper, C, splits, gen):
    dtype = lower.dtype
    bounds = method.compute(network, lower, upper, C=C, splits=splits)
    assert bounds.output_lower.dtype == dtype
    for b in range(lower.shape[0]):
        x = sample_box(lower[b], upper[b], SAMPLES, gen)
        pre, logits = activations(network, x)
        keep = satisfies(pre, None if splits is None else [s[b] for s in splits])
        keep = torch.ones(SAMPLES, dtype=torch.bool) if keep is None else keep
        assert keep.any() and not bounds.infeasible[b]
        spec = torch.eye(logits.shape[1], dtype=dtype) if C is None else (C if C.dim() == 2 else C[b])
        out = (logits @ spec.T)[keep]
        gap = _violation(out, bounds.output_lower[b], bounds.output_upper[b])
        assert gap <= 0, f"box {b}: outputs escape the bounds by {gap}"
        for i, z in enumerate(pre):
            gap = _violation(z[keep], bounds.pre_lower[i][b], bounds.pre_upper[i][b])
            assert gap <= 0, f"box {b}: ReLU layer {i} inputs escape the bounds by {gap}"


GRAPHS = {f"{kind}-{seed}": (kind, seed) for kind in ("conv", "dense") for seed in range(4)}


@pytest.mark.parametrize("with_splits", [False, True], ids=["free", "splits"])
@pytest.mark.parametrize("graph", list(GRAPHS), ids=list(GRAPHS))
@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_samples_never_escape_on_graphs(method, graph, with_splits):
    """Residual Add, Concat, max pool, depthwise average, Pad, Transpose, Reshape: the same contract."""
    kind, seed = GRAPHS[graph]
    network = random_graph(seed, kind=kind)
    gen = torch.Generator().manual_seed(300 + seed)
    lower, upper = _boxes(network, gen, torch.float32)
    C = _spec(seed, network.output_shape[0], gen, torch.float32)
    splits = random_splits(network, lower, upper, gen) if with_splits else None
    _check(METHODS[method], network, lower, upper, C, splits, gen)
