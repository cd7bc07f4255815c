"""The Z3 encoding computes the network exactly (rational arithmetic on the float weights)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import z3

from certprune.bounds import CROWN
from certprune.errors import UnsupportedLayerError
from certprune.network import Affine, Dense, Flatten, Network, ReLU
from certprune.smt.z3_encode import encode, rational, solve, value_of
from tests.netgen import random_network


def exact_forward(network: Network, x) -> list[Fraction]:
    """The network on ``x`` in exact rational arithmetic (the reference the encoding must match)."""
    values = [Fraction(float(v)) for v in x]
    for layer in network.layers:
        if isinstance(layer, Dense):
            W, b = layer.weight.double().numpy(), layer.bias.double().numpy()
            values = [sum((Fraction(float(w)) * v for w, v in zip(row, values)), Fraction(float(c)))
                      for row, c in zip(W, b)]
        elif isinstance(layer, Affine):
            s, c = layer.scale.double().reshape(-1).numpy(), layer.shift.double().reshape(-1).numpy()
            values = [Fraction(float(a)) * v + Fraction(float(d)) for v, a, d in zip(values, s, c)]
        elif isinstance(layer, ReLU):
            values = [max(v, Fraction(0)) for v in values]
    return values


def evaluate(encoding, inputs, x) -> list[Fraction]:
    """Values of the encoded outputs when the inputs are fixed to ``x`` (solved, since ReLUs are variables)."""
    fix = [v == (z3.IntVal(int(a)) if z3.is_int(v) else rational(a)) for v, a in zip(inputs, x)]
    result = solve(list(encoding.constraints) + fix, timeout=10)
    assert result.status == "sat"
    return [value_of(result.model, y) for y in encoding.outputs]


@pytest.mark.parametrize("seed", range(3))
def test_encoding_is_exact_on_points(seed):
    network = random_network(2, 5, (4,), seed=seed, outputs=2, affine=True)
    inputs = [z3.Real(f"x{i}") for i in range(4)]
    encoding = encode(network, inputs)
    assert encoding.unstable == network.relu_count
    rng = np.random.default_rng(seed)
    for x in rng.uniform(-2, 2, size=(4, 4)).astype(np.float32):
        got = evaluate(encoding, inputs, x)
        assert got == exact_forward(network, x)
        torch_y = network.to(torch.float64)(torch.from_numpy(x.astype(np.float64))[None])[0].numpy()
        assert np.allclose([float(v) for v in got], torch_y, atol=1e-9)


def test_integer_inputs_and_stable_neurons_from_bounds():
    network = random_network(2, 6, (3,), seed=4, outputs=1)
    lo, hi = np.array([1, 0, 2]), np.array([2, 1, 3])
    bounds = CROWN().compute(network, torch.tensor(lo[None], dtype=torch.float64),
                             torch.tensor(hi[None], dtype=torch.float64))
    states = [(bounds.stable_active(i).to(torch.int8) - bounds.stable_inactive(i).to(torch.int8))[0].numpy()
              for i in range(len(bounds.pre_lower))]
    hints = [(bounds.pre_lower[i][0], bounds.pre_upper[i][0]) for i in range(len(bounds.pre_lower))]
    inputs = [z3.Int(f"x{i}") for i in range(3)]
    encoding = encode(network, inputs, states=states, pre_bounds=hints)
    assert encoding.unstable == sum(int((s == 0).sum()) for s in states) < network.relu_count
    for x in [(1, 0, 2), (2, 1, 3), (1, 1, 2), (2, 0, 3)]:
        assert evaluate(encoding, inputs, x) == exact_forward(network, x)


def test_solving_a_maximum_and_its_absence():
    network = Network((Dense(torch.tensor([[1.0, -1.0]]), torch.tensor([0.5])), ReLU(),
                       Dense(torch.tensor([[2.0]]), torch.tensor([0.0]))), (2,))
    x = [z3.Int("a"), z3.Int("b")]
    enc = encode(network, x)
    box = [x[0] >= 0, x[0] <= 3, x[1] >= 0, x[1] <= 3]
    assert solve(box + list(enc.constraints) + [enc.outputs[0] >= 7]).status == "sat"  # 2 * (3 - 0 + 0.5)
    assert solve(box + list(enc.constraints) + [enc.outputs[0] > 7]).status == "unsat"


def test_exact_value_of_a_float_weight():
    solver = z3.Solver()
    solver.check()
    assert value_of(solver.model(), rational(0.1)) == Fraction(0.1) != Fraction(1, 10)  # the float, not 1/10


def test_convolution_and_wrong_sizes_are_refused():
    conv = random_network(1, 2, (1, 4, 4), conv=True, seed=0)
    with pytest.raises(UnsupportedLayerError, match="conv2d"):
        encode(conv, [z3.Real(f"x{i}") for i in range(16)])
    flat = Network((Flatten(), Dense(torch.ones(1, 4), torch.zeros(1))), (2, 2))
    assert len(encode(flat, [z3.Real(f"x{i}") for i in range(4)]).outputs) == 1
    with pytest.raises(ValueError, match="3 input expressions"):
        encode(flat, [z3.Real(f"x{i}") for i in range(3)])


def test_timeout_is_reported():
    x = z3.Real("x")
    result = solve([x * x == 2, x > 0], timeout=0.001)  # nonlinear: may need more than a millisecond
    assert result.status in ("sat", "timeout", "unknown")
