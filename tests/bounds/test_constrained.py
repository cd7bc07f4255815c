"""Bounds under an output constraint (INVPROP): a conjunction is refuted only where the exact MILP finds no
input meeting it (near ties included, float32 and float64), the bounds hold at every sampled input that meets
it, and it refutes conjunctions that alpha-CROWN alone cannot (so these tests fail if it does nothing)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from certprune.bounds import AlphaCROWN
from certprune.bounds.constrained import OutputConstrained
from tests.netgen import random_network

from .milp import dense_chain, exact_minimum

SEEDS = range(6)
SHIFTS = (-1.0, -0.1, -1e-4, 1e-4, 0.1)  # b = the exact minimum of a row + shift: empty below 0, not above


def case(seed: int, dtype: torch.dtype):
    network = random_network(3, 10, (4,), seed=seed, dtype=dtype)
    gen = torch.Generator().manual_seed(100 + seed)
    lower = (torch.rand(1, 4, generator=gen, dtype=torch.float64) - 0.5).to(dtype)
    upper = lower + 0.8
    rows = torch.randn(3, 3, generator=gen, dtype=torch.float64).to(dtype)
    return network, lower, upper, rows


def root(network, lower, upper, C):
    return AlphaCROWN(iterations=10, intermediate_iterations=10).compute(network, lower, upper, C=C)


def conjunctions(network, lower, upper, rows):
    """Single rows at the shifts above, and pairs of rows each at its own minimum + 0.3 (padded with a
    vacuous b = +inf row to the same size), with whether the exact MILP finds each empty."""
    chain = dense_chain(network)
    lo, hi = lower[0].double().numpy(), upper[0].double().numpy()
    minima = [exact_minimum(chain, lo, hi, c.double().numpy())[0] for c in rows]
    A, b = [], []
    for c, least in zip(rows, minima):
        for shift in SHIFTS:
            A.append(torch.stack([c, torch.zeros_like(c)]))
            b.append([least + shift, np.inf])
    for k in range(len(rows)):
        pair = [k, (k + 1) % len(rows)]
        A.append(rows[pair])
        b.append([minima[j] + 0.3 for j in pair])
    A, b = torch.stack(A), torch.tensor(b, dtype=rows.dtype)
    empty = []
    for A_g, b_g in zip(A, b):
        finite = torch.isfinite(b_g)
        constraint = (A_g[finite].double().numpy(), b_g[finite].double().numpy())
        empty.append(exact_minimum(chain, lo, hi, np.zeros(A.shape[-1]), subject_to=constraint) is None)
    return A, b, np.array(empty)


# passes 12: eleven warm-started passes, none stopped for lack of progress
@pytest.mark.parametrize("seed,dtype,passes", [(seed, dtype, 3) for seed in SEEDS
                                               for dtype in (torch.float32, torch.float64)]
                         + [(seed, torch.float32, 12) for seed in SEEDS[:3]])
def test_a_refuted_conjunction_is_empty_by_the_exact_milp(seed, dtype, passes):
    network, lower, upper, rows = case(seed, dtype)
    A, b, empty = conjunctions(network, lower, upper, rows)
    method = OutputConstrained(passes=passes, warm_iterations=5, min_progress=-np.inf if passes > 3 else 0.05)
    refuted = method.refute(network, lower, upper, A, b, root(network, lower, upper, rows))
    wrong = np.flatnonzero(refuted.numpy() & ~empty)
    assert not len(wrong), f"refuted conjunctions {wrong.tolist()} have inputs: {b[wrong].tolist()}"


def test_it_refutes_what_alpha_crown_alone_cannot():
    gained = 0
    for seed in SEEDS:
        network, lower, upper, rows = case(seed, torch.float64)
        A, b, empty = conjunctions(network, lower, upper, rows)
        bounds = root(network, lower, upper, rows)
        refuted = OutputConstrained(passes=3).refute(network, lower, upper, A, b, bounds)
        single = torch.arange(len(rows) * len(SHIFTS))
        by_alpha = bounds.output_lower[0].repeat_interleave(len(SHIFTS)) > b[single, 0]
        gained += int((refuted[single] & ~by_alpha).sum())
    assert gained >= 3, gained


def test_a_conjunction_gets_no_more_passes_once_a_pass_stops_paying():
    network, lower, upper, rows = case(1, torch.float64)
    A, b, _ = conjunctions(network, lower, upper, rows)
    prior = root(network, lower, upper, rows)
    two = OutputConstrained(passes=2).bounds_under(network, lower, upper, A, b, prior)
    never = OutputConstrained(passes=32, min_progress=1e9, min_narrowing=1.0)
    stalled = never.bounds_under(network, lower, upper, A, b, prior)
    assert torch.equal(two[0], stalled[0])
    for a, c in zip(two[1].pre_lower + two[1].pre_upper, stalled[1].pre_lower + stalled[1].pre_upper):
        assert torch.equal(a, c)
    more = OutputConstrained(passes=32, min_progress=-np.inf).bounds_under(network, lower, upper, A, b, prior)
    assert int(more[0].sum()) >= int(two[0].sum())
    narrowed = [(ml - l).min() >= 0 and (u - mu).min() >= 0 for l, u, ml, mu in
                zip(two[1].pre_lower, two[1].pre_upper, more[1].pre_lower, more[1].pre_upper)]
    assert all(narrowed)  # later passes only narrow the bounds


def forward_inputs(network, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of every ReLU at the points x, and the logits (float64, from the weights)."""
    values = []
    chain = dense_chain(network)
    for W, b in chain[:-1]:
        values.append(x @ torch.from_numpy(W).T + torch.from_numpy(b))
        x = values[-1].clamp(min=0)
    W, b = chain[-1]
    return values + [x @ torch.from_numpy(W).T + torch.from_numpy(b)]


@pytest.mark.parametrize("seed", SEEDS)
def test_the_bounds_hold_at_every_sampled_input_meeting_the_conjunction(seed):
    network, lower, upper, rows = case(seed, torch.float64)
    gen = torch.Generator().manual_seed(seed)
    x = lower + (upper - lower) * torch.rand(20000, 4, generator=gen, dtype=torch.float64)
    *pre, y = forward_inputs(network, x)
    values = y @ rows.T
    b = torch.quantile(values, 0.3, dim=0)  # one row each: about 30% of the points meet it
    prior = root(network, lower, upper, rows)
    _, bounds = OutputConstrained(passes=3).bounds_under(network, lower, upper, rows.unsqueeze(1), b.unsqueeze(1),
                                                          prior)
    tighter = 0.0
    for g in range(len(rows)):
        inside = values[:, g] <= b[g]
        assert inside.sum() > 1000
        for i, z in enumerate(pre):
            low, high = bounds.pre_lower[i][g], bounds.pre_upper[i][g]
            assert bool((z[inside] >= low - 1e-9).all() and (z[inside] <= high + 1e-9).all()), (g, i)
            tighter = max(tighter, float(((high - low) - (prior.pre_upper[i][0] - prior.pre_lower[i][0])).neg().max()))
    assert tighter > 1e-2  # narrower than the whole box's bounds somewhere
