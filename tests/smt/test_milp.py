"""The MILP back end is exact: optima match brute force, answers are confirmed, binaries only where needed."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from certprune.bounds import IBP
from certprune.network import Affine, Conv2d, Dense, Flatten, Network, ReLU
from certprune.smt import milp as milp_module
from certprune.smt.milp import MilpStatus, optimize, solve_milp
from tests.netgen import random_network


def dense_net(sizes, seed):
    """A dense network with the hidden widths of ``sizes`` (all equal), from the shared generator."""
    return random_network(len(sizes) - 2, sizes[1], (sizes[0],), seed=seed, outputs=sizes[-1])


def interval_bounds(network, lower, upper):
    """Pre-activation intervals of every ReLU layer, in float64 (the test's own small IBP)."""
    lo = torch.as_tensor(lower, dtype=torch.float64)[None]
    hi = torch.as_tensor(upper, dtype=torch.float64)[None]
    pre = []
    for layer in network.to(torch.float64).layers:
        if isinstance(layer, ReLU):
            pre.append((lo[0].numpy(), hi[0].numpy()))
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
        elif isinstance(layer, Flatten):
            lo, hi = layer.forward(lo), layer.forward(hi)
        else:
            mid, rad = (lo + hi) / 2, (hi - lo) / 2
            if isinstance(layer, Dense):
                mid, rad = layer.forward(mid), rad @ layer.weight.abs().T
            elif isinstance(layer, Conv2d):
                mid = layer.forward(mid)
                rad = torch.nn.functional.conv2d(rad, layer.weight.abs(), None, layer.stride, layer.padding, layer.dilation)
            else:
                mid, rad = layer.forward(mid), rad * layer.scale.abs()
            lo, hi = mid - rad, mid + rad
    return pre


def values(network, x, c):
    with torch.no_grad():
        y = network.to(torch.float64)(torch.as_tensor(x, dtype=torch.float64))
    return y.flatten(start_dim=1).numpy() @ np.asarray(c, dtype=np.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_optimum_matches_brute_force_in_one_dimension(seed):
    net = dense_net([1, 12, 12, 2], seed)
    lower, upper = np.array([-2.0]), np.array([2.0])
    pre = interval_bounds(net, lower, upper)
    grid = np.linspace(-2, 2, 40001)[:, None]
    sampled = values(net, grid, [1.0, -1.0])
    for sense, best in (("min", sampled.min()), ("max", sampled.max())):
        value, x, bound = optimize(net, lower, upper, pre, [1.0, -1.0], sense=sense)
        sign = 1 if sense == "min" else -1
        assert sign * (best - value) >= -1e-7  # no sample beats the exact optimum
        assert abs(best - value) < 1e-3  # and the grid gets close to it (the net is piecewise linear)
        assert sign * (value - bound) >= 0 and abs(value - bound) < 1e-4
        assert lower[0] <= x[0] <= upper[0]
        assert values(net, x[None], [1.0, -1.0])[0] == pytest.approx(value)


def test_optimum_never_beaten_by_sampling_in_two_dimensions():
    net = dense_net([2, 10, 10, 3], 3)
    lower, upper = np.array([-1.0, 0.0]), np.array([1.0, 0.5])
    pre = interval_bounds(net, lower, upper)
    g = np.linspace(0, 1, 201)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) * (upper - lower) + lower
    samples = np.concatenate([grid, np.random.default_rng(0).uniform(lower, upper, (20000, 2))])
    c = np.array([0.5, -1.0, 2.0])
    sampled = values(net, samples, c)
    low, _, low_bound = optimize(net, lower, upper, pre, c, "min")
    high, _, high_bound = optimize(net, lower, upper, pre, c, "max")
    assert sampled.min() >= low - 1e-7 and sampled.max() <= high + 1e-7
    assert sampled.min() - low < 1e-2 and high - sampled.max() < 1e-2
    assert low_bound <= low and high_bound >= high


def test_feasibility_sat_and_unsat_around_the_optimum():
    net = dense_net([2, 10, 10, 3], 4)
    lower, upper = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    pre = interval_bounds(net, lower, upper)
    A = np.array([[1.0, 0.0, -1.0]])
    low, _, _ = optimize(net, lower, upper, pre, A[0], "min")
    sat = solve_milp(net, lower, upper, pre, A, [low + 1e-3])
    assert sat.status == MilpStatus.SAT == "sat" and sat.x.dtype == np.float32 and sat.x.shape == (2,)
    assert np.all(lower <= sat.x) and np.all(sat.x <= upper)
    for dtype in (torch.float32, torch.float64):
        y = net.to(dtype)(torch.as_tensor(sat.x, dtype=dtype)[None])[0].double().numpy()
        assert A @ y <= low + 1e-3
    assert solve_milp(net, lower, upper, pre, A, [low - 1e-3]).status == "unsat"
    # a conjunction: both rows at once
    both = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    result = solve_milp(net, lower, upper, pre, both, [low + 1e-3, -100.0])
    assert result.status == "unsat" and result.x is None


def test_conv_affine_flatten_network():
    g = torch.Generator().manual_seed(5)
    net = Network([
        Affine(torch.full((1, 4, 4), 2.0), torch.full((1, 4, 4), -1.0)),
        Conv2d(torch.randn(2, 1, 3, 3, generator=g), 0.1 * torch.randn(2, generator=g), (2, 2), (1, 1)),
        ReLU(), Flatten(), Dense(torch.randn(3, 8, generator=g) / 3, torch.zeros(3)), ReLU(),
        Dense(torch.randn(2, 3, generator=g), torch.zeros(2)),
    ], (1, 4, 4))
    center = torch.rand((1, 4, 4), generator=g).double().numpy()
    lower, upper = np.clip(center - 0.1, 0, 1), np.clip(center + 0.1, 0, 1)
    pre = interval_bounds(net, lower, upper)
    samples = np.random.default_rng(1).uniform(lower.ravel(), upper.ravel(), (50000, 16)).reshape(-1, 1, 4, 4)
    sampled = values(net, samples, [1.0, -1.0])
    low, x, _ = optimize(net, lower, upper, pre, [1.0, -1.0], "min")
    assert x.shape == (1, 4, 4) and sampled.min() >= low - 1e-7
    assert values(net, x[None], [1.0, -1.0])[0] == pytest.approx(low)


def test_integer_inputs_match_exhaustive_enumeration():
    net = dense_net([3, 8, 8, 2], 6)
    lower, upper = np.array([0.0, -2.0, 0.0]), np.array([4.0, 2.0, 1.0])
    pre = interval_bounds(net, lower, upper)
    points = np.array(list(itertools.product(range(0, 5), range(-2, 3), range(0, 2))), dtype=np.float64)
    c = np.array([1.0, -1.0])
    exhaustive = values(net, points, c)
    integer = np.array([True, True, True])
    for sense, best in (("min", exhaustive.min()), ("max", exhaustive.max())):
        value, x, _ = optimize(net, lower, upper, pre, c, sense, integer_inputs=integer)
        assert value == pytest.approx(best, abs=1e-9) and np.all(x == np.round(x))
    # mixed: x_0 integer, the others continuous: the optimum over a fine grid of the continuous part
    mixed = np.array([True, False, False])
    value, x, _ = optimize(net, lower, upper, pre, c, "max", integer_inputs=mixed)
    assert x[0] == round(x[0])
    g = np.linspace(0, 1, 81)
    fine = np.array([(i, -2 + 4 * a, b) for i in range(5) for a in g for b in g])
    assert values(net, fine, c).max() <= value + 1e-7
    # feasibility with integers: a threshold only a non-integer point could reach is unsat
    result = solve_milp(net, lower, upper, pre, -c[None], [-(exhaustive.max() + 1e-4)], integer_inputs=integer)
    assert result.status == "unsat"


def test_only_unstable_neurons_get_binaries():
    net = dense_net([2, 6, 2], 9)
    lower, upper = np.array([-0.2, -0.2]), np.array([0.2, 0.2])
    (l, u), = interval_bounds(net, lower, upper)
    unstable, inactive = (l < 0) & (u > 0), u <= 0
    assert 0 < unstable.sum() < 6 and inactive.any()  # all three kinds of neuron occur
    model = milp_module._Encoding.build(net, lower, upper, [(l, u)], None)
    assert int(np.concatenate(model.integrality).sum()) == unstable.sum()
    samples = np.random.default_rng(2).uniform(lower, upper, (5000, 2))
    low, _, _ = optimize(net, lower, upper, [(l, u)], [1.0, -1.0], "min")
    assert values(net, samples, [1.0, -1.0]).min() >= low - 1e-7


def test_bounds_act_as_split_decisions():
    net = dense_net([2, 6, 6, 2], 8)
    lower, upper = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    pre = interval_bounds(net, lower, upper)
    first_layer = net.to(torch.float64).layers[0]
    free, x_free, _ = optimize(net, lower, upper, pre, [1.0, 0.0], "min")
    at_optimum = first_layer.forward(torch.as_tensor(x_free)[None])[0].numpy()
    l0, u0 = pre[0]
    neuron = int(np.flatnonzero((l0 < 0) & (u0 > 0) & (at_optimum < -1e-3))[0])
    fixed = l0.copy()
    fixed[neuron] = 0.0  # the neuron fixed active, as a ReLU split does
    value, x, _ = optimize(net, lower, upper, [(fixed, u0), pre[1]], [1.0, 0.0], "min")
    assert first_layer.forward(torch.as_tensor(x)[None])[0, neuron].item() >= -1e-6
    assert value >= free - 1e-9


def test_unconfirmed_points_are_never_sat(monkeypatch):
    net = dense_net([2, 6, 2], 9)
    lower, upper = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    pre = interval_bounds(net, lower, upper)
    monkeypatch.setattr(milp_module._Encoding, "confirm", lambda *args: None)
    result = solve_milp(net, lower, upper, pre, np.zeros((1, 2)), [1.0])
    assert result.status == "unknown" and result.x is None


def test_argument_errors():
    net = dense_net([2, 4, 2], 10)
    box = (np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="pre_bounds has 0 entries, the network has 1 ReLU layers"):
        solve_milp(net, *box, [], np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match="box has 3 coordinates"):
        solve_milp(net, np.zeros(3), np.ones(3), interval_bounds(net, *box), np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match="sense must be 'min' or 'max'"):
        optimize(net, *box, interval_bounds(net, *box), [1.0, 0.0], sense="up")


@pytest.mark.parametrize("seed, conv", [(0, True), (1, True), (2, False)])
def test_random_networks_with_library_bounds(seed, conv):
    """Shared random networks (conv, Affine) with certprune.bounds.IBP: sampling never beats the optimum."""
    shape = (1, 5, 5) if conv else (6,)
    net = random_network(2, 3, shape, conv=conv, seed=seed, outputs=2, affine=True)
    center = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    lower, upper = center - 0.05, center + 0.05
    ibp = IBP().compute(net, lower[None], upper[None])
    pre = [(lo[0], hi[0]) for lo, hi in zip(ibp.pre_lower, ibp.pre_upper)]
    samples = lower + torch.rand((20000, *shape), generator=torch.Generator().manual_seed(9)) * (upper - lower)
    sampled = values(net, samples.double().numpy(), [1.0, -1.0])
    low, x, bound = optimize(net, lower, upper, pre, [1.0, -1.0], "min")
    high, _, _ = optimize(net, lower, upper, pre, [1.0, -1.0], "max")
    assert sampled.min() >= low - 1e-6 and sampled.max() <= high + 1e-6 and bound <= low
    assert solve_milp(net, lower, upper, pre, np.array([[1.0, -1.0]]), [low - 1e-3]).status == "unsat"
    assert solve_milp(net, lower, upper, pre, np.array([[-1.0, 1.0]]), [-high + 1e-3]).status == "sat"


def test_the_solvers_own_prints_do_not_reach_stdout(capfd):
    """What is written to file descriptor 1 while HiGHS runs is dropped; stdout works as before after it."""
    import os

    from certprune.smt.milp import solver_output_silenced

    print("before", flush=True)
    with solver_output_silenced():
        os.write(1, b"HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();\n")
    print("after", flush=True)
    assert capfd.readouterr().out == "before\nafter\n"
