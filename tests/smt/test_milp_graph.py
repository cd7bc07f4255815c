"""The exact back ends on graphs (residual Add, Concat, max pool, depthwise average, Pad, Transpose, Reshape)
against enumeration: boxes whose free coordinates are a few integers, so every input can be tried."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import z3

from certprune.bounds import CROWN
from certprune.smt.milp import MilpStatus, optimize, solve_milp
from certprune.smt.z3_encode import encode, rational, solve, value_of
from tests.netgen import random_graph

CASES = [(kind, seed) for kind in ("conv", "dense") for seed in range(5)]


def _box(network, seed: int):
    """Integer box: three free coordinates in {-1, 0, 1}, the rest fixed at random integers in {-1, 0, 1}."""
    gen = np.random.default_rng(seed)
    n = int(np.prod(network.input_shape))
    fixed = gen.integers(-1, 2, n).astype(np.float64)
    free = gen.choice(n, 3, replace=False)
    lower, upper = fixed.copy(), fixed.copy()
    lower[free], upper[free] = -1.0, 1.0
    points = []
    for values in itertools.product((-1.0, 0.0, 1.0), repeat=3):
        x = fixed.copy()
        x[free] = values
        points.append(x)
    shape = network.input_shape
    return lower.reshape(shape), upper.reshape(shape), np.stack(points).reshape(-1, *shape)


def _pre_bounds(network, lower, upper):
    bounds = CROWN().compute(network, torch.tensor(lower[None], dtype=torch.float32),
                             torch.tensor(upper[None], dtype=torch.float32))
    return [(lo[0], hi[0]) for lo, hi in zip(bounds.pre_lower, bounds.pre_upper)], bounds


@pytest.mark.parametrize("kind,seed", CASES, ids=[f"{k}-{s}" for k, s in CASES])
def test_milp_optimum_equals_enumeration(kind, seed):
    network = random_graph(seed, kind=kind)
    lower, upper, points = _box(network, seed)
    pre_bounds, bounds = _pre_bounds(network, lower, upper)
    c = np.random.default_rng(100 + seed).standard_normal(network.output_shape[0])
    with torch.no_grad():
        truth = float((network.to(torch.float64)(torch.from_numpy(points)).numpy() @ c).min())
    crown_lower = float(CROWN().compute(network, torch.tensor(lower[None], dtype=torch.float32),
                                        torch.tensor(upper[None], dtype=torch.float32),
                                        C=torch.tensor(c[None], dtype=torch.float32)).output_lower[0, 0])
    assert crown_lower <= truth + 1e-6
    optimum = optimize(network, lower, upper, pre_bounds, c, integer_inputs=np.ones(lower.shape, bool))
    assert optimum.proven_bound <= truth + 1e-6
    assert optimum.value == pytest.approx(truth, abs=1e-5 * (1 + abs(truth)))
    # the same as a yes/no question: below the minimum nothing, above it a point that replays
    no = solve_milp(network, lower, upper, pre_bounds, c[None], [truth - 0.01],
                    integer_inputs=np.ones(lower.shape, bool))
    assert no.status is MilpStatus.UNSAT
    yes = solve_milp(network, lower, upper, pre_bounds, c[None], [truth + 0.01],
                     integer_inputs=np.ones(lower.shape, bool))
    assert yes.status is MilpStatus.SAT
    with torch.no_grad():
        assert float(network.to(torch.float64)(torch.from_numpy(yes.x).double()[None])[0].numpy() @ c) <= truth + 0.01


@pytest.mark.parametrize("seed", range(3))
def test_z3_encoding_of_a_dense_graph_computes_the_network(seed):
    network = random_graph(seed, kind="dense")
    x = np.random.default_rng(seed).uniform(-1, 1, network.input_shape)
    inputs = [z3.Real(f"x{i}") for i in range(x.size)]
    encoding = encode(network, inputs)
    fixed = [v == rational(float(value)) for v, value in zip(inputs, x.astype(np.float32).ravel())]
    result = solve(fixed + list(encoding.constraints))
    assert result.status == "sat"
    with torch.no_grad():
        expected = network.to(torch.float64)(torch.from_numpy(x.astype(np.float32).astype(np.float64))[None])[0]
    got = [float(value_of(result.model, y)) for y in encoding.outputs]
    assert np.allclose(got, expected.numpy(), atol=1e-9)
