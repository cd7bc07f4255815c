"""The bounds certified training minimises are sound; the robust loss bounds the loss on each box; NRS by hand."""
from __future__ import annotations

import math

import pytest
import torch

from certprune.bounds import IBP
from certprune.network import Affine, Dense, Network, ReLU
from certprune.prune import (
    NRS, NetworkModule, PruneData, margin_lower_bounds, margin_spec, nrs, nrs_loss, robust_cross_entropy,
    task_loss,
)
from certprune.prune.module import interval_pass
from certprune.types import clipped_ball
from tests.prune.nets import NETWORKS


def _boxes(network, n=6, eps=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *network.input_shape), generator=g)
    y = torch.randint(0, max(2, math.prod(network.output_shape)), (n,), generator=g)
    return x, y, *clipped_ball(x, eps, 0.0, 1.0)


def _sampled_margins(network, y, lower, upper, count=3000, seed=1):
    """C @ logits at ``count`` random points of every box: (count, B, K)."""
    g = torch.Generator().manual_seed(seed)
    points = lower[None] + (upper - lower)[None] * torch.rand((count, *lower.shape), generator=g)
    n = math.prod(network.output_shape)
    with torch.no_grad():
        logits = network(points.reshape(-1, *network.input_shape)).reshape(count, len(lower), n)
    return torch.einsum("bkn,sbn->sbk", margin_spec(y, n), logits)


def _affine_last(seed: int = 0) -> Network:
    """A network whose logits pass through an Affine after the last Dense (IBP cannot merge C into it)."""
    g = torch.Generator().manual_seed(seed)
    return Network((Dense(torch.randn(8, 5, generator=g), torch.randn(8, generator=g)), ReLU(),
                    Dense(torch.randn(3, 8, generator=g), torch.zeros(3)),
                    Affine(torch.tensor([1.5, -0.5, 2.0]), torch.tensor([0.1, 0.0, -0.3]))), (5,))


@pytest.mark.parametrize("net_name", sorted(NETWORKS) + ["affine_last"])
@pytest.mark.parametrize("crown_share", [0.0, 0.5, 1.0])
def test_margin_bounds_of_the_loss_hold_on_sampled_inputs(net_name, crown_share):
    network = _affine_last() if net_name == "affine_last" else NETWORKS[net_name]()
    x, y, lower, upper = _boxes(network)
    bound, pre = margin_lower_bounds(NetworkModule(network), lower, upper, y, crown_share)
    sampled = _sampled_margins(network, y, lower, upper)
    assert bool((sampled >= bound.detach()[None] - 1e-5).all())
    assert len(pre) == len(network.relu_sizes())


@pytest.mark.parametrize("net_name", ["mlp", "cnn"])
def test_robust_loss_is_at_least_the_worst_sampled_loss_and_has_gradients(net_name):
    network = NETWORKS[net_name]()
    x, y, lower, upper = _boxes(network)
    module = NetworkModule(network)
    bound, _ = margin_lower_bounds(module, lower, upper, y, 0.5)
    robust = robust_cross_entropy(bound)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        worst = max(float(task_loss(module(lower + (upper - lower) * torch.rand(lower.shape, generator=g)), y))
                    for _ in range(200))
        assert float(robust) >= worst >= float(task_loss(module(x), y)) - 1.0
    robust.backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.weights.values())


def test_robust_cross_entropy_is_the_cross_entropy_when_bounds_are_exact():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 1])
    margins = torch.einsum("bkn,bn->bk", margin_spec(y, 3), logits)
    torch.testing.assert_close(robust_cross_entropy(margins), torch.nn.functional.cross_entropy(logits, y))
    one = torch.tensor([[0.7], [-0.2]])
    labels = torch.tensor([1, 0])
    margins = torch.einsum("bkn,bn->bk", margin_spec(labels, 1), one)
    torch.testing.assert_close(robust_cross_entropy(margins), task_loss(one, labels))


def _hand_network(gamma=(1.0, 1.0)):
    """x in R^2 -> z = (x0, x0 - x1 + 0.5) -> BatchNorm scale gamma -> ReLU -> one logit."""
    first = Dense(torch.tensor([[1.0, 0.0], [1.0, -1.0]]), torch.tensor([0.0, 0.5]))
    scale = torch.tensor(gamma)
    return Network((first, Affine(scale, torch.zeros(2)), ReLU(), Dense(torch.ones(1, 2), torch.zeros(1))), (2,))


def test_nrs_criterion_matches_a_hand_computation():
    # One box, x in [0, 1]^2 (center 0.5, eps 0.5). Unit 0: z0 = x0 in [0, 1], l u = 0, NRS = -tanh(1).
    # Unit 1: z1 = x0 - x1 + 0.5 in [-0.5, 1.5], l u = -0.75, NRS = -tanh(0.25); score = -NRS.
    # float64 boxes: the sound bounds' rounding margin (2^-44 relative) is then far below the tolerance.
    box = PruneData(torch.full((1, 2), 0.5, dtype=torch.float64), torch.zeros(1, dtype=torch.long), 0.5, 0.0, 1.0)
    expected = torch.tensor([math.tanh(1.0), math.tanh(0.25)])
    tolerance = {"atol": 1e-6, "rtol": 0}
    torch.testing.assert_close(NRS().scores(_hand_network(), box)[0], expected, **tolerance)
    # A BatchNorm scale of 2 and 0.5: the bounds become [0, 2] and [-0.25, 0.75]; divided by gamma^2 the
    # products are 0 and -0.75 again, so the scores do not change; without the division unit 1 would score
    # tanh(1 - 0.1875).
    scaled = _hand_network((2.0, 0.5))
    torch.testing.assert_close(NRS().scores(scaled, box)[0], expected, **tolerance)
    lower, upper = box.boxes()
    (lo, hi), = NetworkModule(scaled).interval_bounds(lower.float(), upper.float())
    assert abs(float(-nrs(lo, hi).detach()[0, 1]) - math.tanh(1 - 0.1875)) < 1e-6
    # Two boxes: the score is the mean over boxes. The second, x in [0.9, 1] x [0, 0.1]: both units stable
    # active (z0 in [0.9, 1], z1 in [1.3, 1.5]): NRS = -tanh(1 + 0.9) and -tanh(1 + 1.95).
    two = PruneData(torch.tensor([[0.5, 0.5], [0.95, 0.05]], dtype=torch.float64), torch.zeros(2, dtype=torch.long),
                    torch.tensor([[0.5, 0.5], [0.05, 0.05]], dtype=torch.float64), 0.0, 1.0)
    mean = torch.tensor([(math.tanh(1.0) + math.tanh(1.9)) / 2, (math.tanh(0.25) + math.tanh(2.95)) / 2])
    torch.testing.assert_close(NRS().scores(_hand_network(), two)[0], mean, **tolerance)


def test_nrs_loss_is_the_mean_nrs_with_the_trained_scale():
    network = _hand_network((2.0, 0.5))
    lower, upper = torch.zeros(1, 2), torch.ones(1, 2)
    module = NetworkModule(network)
    assert set(module.scales) == {"1"}  # the per-unit Affine is trained
    pre, _ = interval_pass(module, lower, upper)
    loss = nrs_loss(module, pre)
    assert abs(float(loss.detach()) + (math.tanh(1.0) + math.tanh(0.25)) / 2) < 1e-6
    loss.backward()
    assert module.scales["1"].grad is not None  # through l and u; gamma itself is detached in the division


def test_nrs_prunes_the_unstable_unit_first_and_keeps_the_dead_one():
    # Unit 2 is dead on the box (z2 = -x0 - 1): NRS counts it stable; Stability would remove it first.
    first = Dense(torch.tensor([[1.0, 0.0], [1.0, -1.0], [-1.0, 0.0]]), torch.tensor([0.0, 0.5, -1.0]))
    network = Network((first, ReLU(), Dense(torch.ones(1, 3), torch.zeros(1))), (2,))
    box = PruneData(torch.full((1, 2), 0.5), torch.zeros(1, dtype=torch.long), 0.5, 0.0, 1.0)
    scores = NRS(method=IBP()).scores(network, box)[0]
    assert int(scores.argmin()) == 1 and int(scores.argmax()) == 2
