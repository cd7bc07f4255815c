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
