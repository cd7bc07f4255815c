"""AlphaCROWN.domains, the branch-and-bound entry: slopes inherited from a parent never make a child's bound
looser than fresh CROWN with the same intermediate bounds, the bounds stay below the exact minimum (MILP) of
the child, and the branching scores are the intercepts times the real backward coefficients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from certprune.bab.domains import select_bounds
from certprune.bounds import CROWN, AlphaCROWN
from certprune.bounds.alpha import Slopes, inherited_bounds
from certprune.network import Dense, Network, ReLU
from tests.netgen import random_network

from .milp import dense_chain, exact_minimum

TOLERANCE = 1e-5


def _case(seed: int):
    network = random_network(2, 10, (5,), seed=seed, outputs=4, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(1, 5, generator=gen, dtype=torch.float64) * 2 - 1
    lower, upper = center - 0.5, center + 0.5
    C = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    return network, lower, upper, C


def _children(bounds):
    """Both children of the root, split on its first unstable neuron of the first layer that has one."""
    for i in range(len(bounds.pre_lower)):
        unstable = torch.nonzero(bounds.unstable(i)[0]).flatten()
        if len(unstable):
            splits = [torch.zeros(2, *p.shape[1:], dtype=torch.int8) for p in bounds.pre_lower]
            splits[i][0, unstable[0]], splits[i][1, unstable[0]] = 1, -1
            return splits
    raise AssertionError("no unstable neuron")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fixed", [True, False])
def test_children_from_inherited_slopes(seed, fixed):
    network, lower, upper, C = _case(seed)
    method = AlphaCROWN(iterations=8, optimize_upper=False, fixed_intermediate=fixed)
    root, slopes, _ = AlphaCROWN(iterations=20).domains(network, lower, upper, C=C)
    assert all(a.shape[:2] == (1, 3) for a in slopes.alpha)  # the lower-bound rows only
    splits = _children(root)
    lo2, hi2 = lower.expand(2, -1), upper.expand(2, -1)
    prior = select_bounds(root, torch.tensor([0, 0]))
    child, kept, scores = method.domains(network, lo2, hi2, C=C, splits=splits, prior=prior,
                                         start=slopes.select(torch.tensor([0, 0])), target=torch.zeros(3))
    fresh = CROWN(fixed_intermediate=fixed).compute(network, lo2, hi2, C=C, splits=splits, prior=prior)
    assert torch.all(child.output_lower >= fresh.output_lower - TOLERANCE * (1 + fresh.output_lower.abs()))
    assert torch.all(child.output_lower >= root.output_lower - TOLERANCE)  # a child is never looser than its parent
    assert all(0 <= float(a.min()) and float(a.max()) <= 1 for a in kept.alpha)
    assert all(float(b.min()) >= 0 for b in kept.beta)
    assert all(float(s.min()) >= 0 for s in scores)
    chain = dense_chain(network)
    for b in range(2):
        box_splits = [s[b].numpy() for s in splits]
        for r, c in enumerate(C.numpy()):
            exact = exact_minimum(chain, lower[0].numpy(), upper[0].numpy(), c, box_splits)
            if exact is None:  # an empty child: any bound holds
                continue
            assert float(child.output_lower[b, r]) <= exact[0] + TOLERANCE


def test_scores_are_intercept_times_backward_coefficient():
    """One hidden layer: the coefficient of relu(z_j) in row r is (C W2)_rj exactly, whatever the slopes."""
    gen = torch.Generator().manual_seed(3)
    W1, b1 = torch.randn(8, 4, generator=gen, dtype=torch.float64), torch.randn(8, generator=gen, dtype=torch.float64)
    W2, b2 = torch.randn(3, 8, generator=gen, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    network = Network((Dense(W1, b1), ReLU(), Dense(W2, b2)), (4,))
    lower, upper = -torch.ones(1, 4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64)
    C = torch.eye(3, dtype=torch.float64)
    method = AlphaCROWN(iterations=3, optimize_upper=False)
    bounds, _, scores = method.domains(network, lower, upper, C=C, target=torch.full((3,), 1e9))
    l, u = bounds.pre_lower[0][0], bounds.pre_upper[0][0]
    unstable = (l < 0) & (u > 0)
    assert unstable.sum() >= 2
    intercept = torch.where(unstable, u * (-l) / (u - l), 0)
    expected = -(C @ W2).clamp(max=0).sum(dim=0) * intercept
    assert torch.allclose(scores[0][0], expected, rtol=1e-3, atol=1e-9)
    # rows already above their target count for nothing
    _, _, none = method.domains(network, lower, upper, C=C, target=torch.full((3,), -1e9))
    assert float(none[0].abs().max()) == 0.0


def test_without_start_the_bound_is_alpha_crowns():
    network, lower, upper, C = _case(1)
    method = AlphaCROWN(iterations=6, optimize_upper=False)
    plain = method.compute(network, lower, upper, C=C)
    bounds, _, _ = method.domains(network, lower, upper, C=C)
    assert torch.allclose(plain.output_lower, bounds.output_lower)
    assert np.isfinite(bounds.output_lower.numpy()).all()


@pytest.mark.parametrize("seed", range(6))
def test_inherited_bounds_hold_on_the_children_whatever_the_slopes(seed):
    """The look-ahead's one-pass bound (random slopes in [0, 1] and multipliers >= 0 standing for a parent's)
    stays below each child's exact minimum and never below the prior."""
    network, lower, upper, C = _case(seed)
    root, slopes, _ = AlphaCROWN(iterations=5).domains(network, lower, upper, C=C)
    splits = _children(root)
    gen = torch.Generator().manual_seed(seed)
    start = Slopes(tuple(torch.rand(a.shape, generator=gen, dtype=a.dtype) for a in slopes.alpha),
                   tuple(3 * torch.rand(b.shape, generator=gen, dtype=b.dtype) for b in slopes.beta))
    chain = dense_chain(network)
    exact = [[exact_minimum(chain, lower[0].numpy(), upper[0].numpy(), c, [s[b].numpy() for s in splits])
              for c in C.numpy()] for b in range(2)]
    for begin in (slopes, start):  # the parent's own slopes (tight) and random ones
        child = inherited_bounds(network, lower, upper, C, root, begin, torch.tensor([0, 0]), splits)
        assert torch.all(child.output_lower >= root.output_lower)
        for b in range(2):
            for r in range(len(C)):
                if exact[b][r] is not None:  # None: an empty child, any bound holds
                    assert float(child.output_lower[b, r]) <= exact[b][r][0] + TOLERANCE
