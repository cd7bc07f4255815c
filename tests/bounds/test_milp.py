"""Every method against exact ranges from a MILP on small dense networks, with and without splits."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from certprune.bounds import CROWN, IBP, AlphaCROWN, Cascade
from tests.netgen import random_network

from .milp import dense_chain, exact_minimum
from .test_soundness import random_splits

METHODS = [IBP(), CROWN(), AlphaCROWN(iterations=10), AlphaCROWN(iterations=10, beta=False),
           Cascade(methods=(IBP(), CROWN(), AlphaCROWN(iterations=5)))]
# (depth, width, inputs)
NETWORKS = [(1, 2, 2), (1, 8, 3), (2, 4, 2), (2, 8, 3), (3, 5, 2), (3, 8, 3), (2, 6, 4), (3, 6, 2)]
TOLERANCE = 1e-5  # HiGHS integrality and feasibility tolerances let the big-M model undercut by ~1e-6


@functools.lru_cache(maxsize=None)
def _case(index: int, with_splits: bool):
    depth, width, inputs = NETWORKS[index]
    network = random_network(depth, width, (inputs,), seed=index, dtype=torch.float64)
    gen = torch.Generator().manual_seed(index)
    center = torch.rand(2, inputs, generator=gen, dtype=torch.float64) * 2 - 1
    radius = torch.tensor([[0.1], [0.6]], dtype=torch.float64)
    lower, upper = center - radius, center + radius
    C = torch.randn(3, network.output_shape[0], generator=gen, dtype=torch.float64)
    splits = random_splits(network, lower, upper, gen, per_box=2) if with_splits else None
    chain = dense_chain(network)
    exact = []
    for b in range(2):
        box_splits = None if splits is None else [s[b].numpy() for s in splits]
        lo, hi = lower[b].numpy(), upper[b].numpy()
        exact.append([(exact_minimum(chain, lo, hi, c, box_splits), exact_minimum(chain, lo, hi, -c, box_splits))
                      for c in C.numpy()])
    return network, lower, upper, C, splits, exact


@pytest.mark.parametrize("with_splits", [False, True], ids=["free", "splits"])
@pytest.mark.parametrize("index", range(len(NETWORKS)))
def test_bounds_contain_exact_range(index, with_splits):
    network, lower, upper, C, splits, exact = _case(index, with_splits)
    for method in METHODS:
        bounds = method.compute(network, lower, upper, C=C, splits=splits)
        for b, rows in enumerate(exact):
            for k, (low, high) in enumerate(rows):
                if low is None:  # the splits leave this box empty
                    continue
                assert not bounds.infeasible[b], f"{method}: box {b} wrongly declared infeasible"
                (minimum, argmin), (neg_maximum, argmax) = low, high
                lower_bound, upper_bound = float(bounds.output_lower[b, k]), float(bounds.output_upper[b, k])
                assert lower_bound <= minimum + TOLERANCE * (1 + abs(minimum)), (method, b, k)
                assert upper_bound >= -neg_maximum - TOLERANCE * (1 + abs(neg_maximum)), (method, b, k)
                # The optimisers are real points of the box: their exact values must lie inside the bounds.
                for x in (argmin, argmax):
                    value = float(C[k] @ network(torch.from_numpy(x)[None])[0])
                    assert lower_bound <= value <= upper_bound, (method, b, k, value)


def test_exact_reference_is_tight_for_one_linear_layer():
    network = random_network(1, 3, (2,), seed=0, dtype=torch.float64)
    chain = dense_chain(network)
    lo, hi = -np.ones(2), np.ones(2)
    value, x = exact_minimum(chain, lo, hi, np.array([1.0, 0.0, 0.0]))
    grid = torch.cartesian_prod(torch.linspace(-1, 1, 201, dtype=torch.float64), torch.linspace(-1, 1, 201, dtype=torch.float64))
    assert abs(float(network(grid)[:, 0].min()) - value) < 1e-3
