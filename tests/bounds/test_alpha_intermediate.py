"""alpha-CROWN with optimised intermediate bounds: no looser than CROWN layer by layer, never past the exact
optimum, and strictly tighter somewhere (so the test could fail if the optimisation did nothing)."""
from __future__ import annotations

import pytest
import torch

from certprune.bounds import CROWN, AlphaCROWN
from tests.netgen import random_network

from .milp import dense_chain, exact_minimum

SEEDS = range(4)


@pytest.mark.parametrize("seed", SEEDS)
def test_refined_bounds_are_inside_and_no_looser(seed):
    network = random_network(3, 12, (4,), seed=seed, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    lower = torch.rand(1, 4, generator=gen, dtype=torch.float64) - 0.5
    upper = lower + 0.6
    C = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    plain = AlphaCROWN(iterations=10).compute(network, lower, upper, C=C)
    refined = AlphaCROWN(iterations=10, intermediate_iterations=15).compute(network, lower, upper, C=C)
    crown = CROWN().compute(network, lower, upper, C=C)
    # Per neuron CROWN is not monotone in the earlier bounds (its 0/1 lower slope follows them), so the
    # refined bounds are compared in total: every layer's summed width no larger than CROWN's.
    for i in range(len(plain.pre_lower)):
        width = lambda b: float((b.pre_upper[i] - b.pre_lower[i]).sum())  # noqa: E731
        assert width(refined) <= width(crown) + 1e-9
    chain = dense_chain(network)
    for row in range(2):
        exact, _ = exact_minimum(chain, lower[0].numpy(), upper[0].numpy(), C[row].numpy())
        assert float(refined.output_lower[0, row]) <= exact + 1e-9


def test_refinement_tightens_some_intermediate_bound():
    gains = []
    for seed in SEEDS:
        network = random_network(3, 12, (4,), seed=seed, dtype=torch.float64)
        gen = torch.Generator().manual_seed(seed)
        lower = torch.rand(1, 4, generator=gen, dtype=torch.float64) - 0.5
        crown = CROWN().compute(network, lower, lower + 0.6)
        refined = AlphaCROWN(iterations=0, intermediate_iterations=15).compute(network, lower, lower + 0.6)
        gains.append(max(float((refined.pre_lower[i] - crown.pre_lower[i]).max()) for i in range(len(crown.pre_lower))))
    assert max(gains) > 1e-3, gains


def test_a_layer_no_optimised_slope_reaches_is_left_as_it_is():
    """On a graph whose branch after a concat is reached by no earlier ReLU with a slope, the refinement's bound
    has no gradient: it raised 'element 0 of tensors does not require grad' (found by a random sweep, seed
    300177). The bounds must still contain sampled outputs."""
    import numpy as np
    import torch

    from certprune.bounds.alpha import AlphaCROWN
    from tests.netgen import random_graph

    network = random_graph(300177 + 31337, kind="dense", width=4, outputs=4)
    lower = torch.tensor([[-0.26360792, -0.53495747, 0.17756017, 0.47554919, -1.12666976]])
    upper = torch.tensor([[0.1921134, -0.07923616, 0.63328147, 0.93127048, -0.67094839]])
    C = torch.tensor([[1.7787014, -1.4438124, -0.2191901, 0.4984106], [-0.5678087, 0.9991100, -0.9790459, -0.1968578],
                      [1.2121758, 1.2379327, -0.1179408, -0.8391216], [0.0739836, 0.1612646, 0.1835777, 0.7113823],
                      [-0.7335734, -0.1841371, 0.5998667, -0.5803520]])
    bounds, _, _ = AlphaCROWN(iterations=5, intermediate_iterations=10).domains(network, lower, upper, C=C)
    x = lower + torch.rand(2000, 5, generator=torch.Generator().manual_seed(0)) * (upper - lower)
    with torch.no_grad():
        values = network(x) @ C.T
    assert bool((values >= bounds.output_lower - 1e-5).all()) and bool((values <= bounds.output_upper + 1e-5).all())
