"""The float32 forward error bound: it covers the real gap between float32 and exact logits, including
cancellation inside a hidden layer, which exact back ends (MILP, Z3) must leave room for."""
from __future__ import annotations

import pytest
import torch

from certprune.bounds.rounding import forward_error
from certprune.network import Dense, Network, ReLU
from tests.netgen import random_network


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("conv", [False, True])
def test_bound_covers_float32_evaluation(seed, conv):
    shape = (2, 6, 6) if conv else (12,)
    network = random_network(3, 40, shape, conv=conv, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    centre = torch.randn((1, *shape), generator=generator, dtype=torch.float64) * 10
    lower, upper = centre - 1, centre + 1
    bound = forward_error(network, lower, upper)[0]
    x = (lower + (upper - lower) * torch.rand((2000, *shape), generator=generator, dtype=torch.float64))
    x32 = x.float()
    exact = network.to(torch.float64)(x32.double())
    gap = (network.to(torch.float32)(x32).double() - exact).abs()
    assert torch.all(gap <= bound), float((gap - bound).max())


def test_cancellation_in_a_hidden_layer_is_covered():
    # float32 cannot hold 10000001 * 3 * 17 - 510000048 exactly: the neuron is off by several units.
    n = 17
    network = Network((Dense(torch.full((1, n), 1000001.0), torch.tensor([-51000048.0])), ReLU(),
                       Dense(torch.tensor([[1.0]]), torch.tensor([-3.5]))), (n,), None)
    corner = torch.full((1, n), 3.0)
    gap = float((network(corner).double() - network.to(torch.float64)(corner.double())).abs())
    assert gap >= 1.0
    assert float(forward_error(network, torch.zeros(1, n), corner)[0, 0]) >= gap
