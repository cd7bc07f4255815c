"""The bounds API: settings, input checks, masks and counts, dtypes, spec shapes, priors, layer rules."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from certprune.bounds import CROWN, IBP, AlphaCROWN, Bounds, Cascade
from certprune.bounds.linear import AFFINE_RULES, LinearBound
from certprune.errors import UnsupportedLayerError
from certprune.network import Conv2d, Dense, Network, ReLU
from tests.netgen import random_network

ALL = [IBP(), CROWN(), AlphaCROWN(iterations=3), Cascade()]


def _boxes(network, batch=4, radius=0.1, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(batch, *network.input_shape, generator=gen, dtype=dtype)
    return center - radius, center + radius


class Sigmoid(ReLU):
    """A layer record of a kind no bound method knows."""

    kind = "sigmoid"


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.name)
def test_unknown_layer_kind_is_named(method):
    base = random_network(2, 5, (3,), seed=0)
    network = base.with_layers((*base.layers[:3], Sigmoid(), *base.layers[4:]))
    with pytest.raises(UnsupportedLayerError, match="'sigmoid'.*layer 3"):
        method.compute(network, *_boxes(network))


def test_settings_are_frozen_and_keyword_only():
    method = AlphaCROWN(iterations=20, lr=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        method.iterations = 3
    with pytest.raises(TypeError):
        AlphaCROWN(20)
    with pytest.raises(ValueError):
        AlphaCROWN(lr=-1.0)
    assert AlphaCROWN(iterations=5) == AlphaCROWN(iterations=5)


@pytest.mark.parametrize("bad, message", [
    (lambda lo, up: (lo[:, :2], up[:, :2]), "expected"),
    (lambda lo, up: (up, lo), "lower exceeds upper"),
    (lambda lo, up: (lo * torch.nan, up), "NaN"),
])
def test_bad_boxes_are_rejected(bad, message):
    network = random_network(2, 5, (3,), seed=0)
    with pytest.raises(ValueError, match=message):
        CROWN().compute(network, *bad(*_boxes(network)))


def test_bad_spec_and_splits_are_rejected():
    network = random_network(2, 5, (3,), seed=0)
    lower, upper = _boxes(network)
    with pytest.raises(ValueError, match="C has shape"):
        CROWN().compute(network, lower, upper, C=torch.ones(2, 4))
    with pytest.raises(ValueError, match="C has shape"):
        CROWN().compute(network, lower, upper, C=torch.ones(3, 2, 3))
    with pytest.raises(ValueError, match="2 ReLU layers"):
        CROWN().compute(network, lower, upper, splits=[None])
    with pytest.raises(ValueError, match=r"splits\[1\] has shape"):
        CROWN().compute(network, lower, upper, splits=[None, torch.zeros(4, 6, dtype=torch.int8)])
    with pytest.raises(ValueError, match="other than -1, 0 and"):
        CROWN().compute(network, lower, upper, splits=[None, torch.full((4, 5), 2, dtype=torch.int8)])
    prior = CROWN().compute(network, lower[:2], upper[:2])
    with pytest.raises(ValueError, match="prior bounds"):
        CROWN().compute(network, lower, upper, prior=prior)


def test_masks_partition_neurons_and_counts_agree():
    network = random_network(3, 20, (4,), seed=1)
    bounds = CROWN().compute(network, *_boxes(network, radius=0.3))
    per_box = bounds.unstable_counts(per_box=True)
    totals = bounds.unstable_counts()
    for i in range(3):
        masks = torch.stack([bounds.stable_active(i), bounds.stable_inactive(i), bounds.unstable(i)])
        assert (masks.sum(0) == 1).all()
        assert per_box[i].shape == (4,) and int(per_box[i].sum()) == totals[i] == int(bounds.unstable(i).sum())
    assert sum(totals) > 0


def test_exact_ties_are_not_stable():
    # A neuron whose input is exactly 0 at the box's lowest point must not be declared active.
    network = Network((Dense(torch.eye(2), torch.zeros(2)), ReLU(), Dense(torch.ones(1, 2), torch.zeros(1))), (2,))
    lower, upper = torch.zeros(1, 2), torch.ones(1, 2)
    for method in ALL:
        b = method.compute(network, lower, upper)
        assert b.unstable(0).all() and not b.stable_active(0).any()


def test_float64_inputs_compute_in_float64():
    network = random_network(3, 10, (4,), seed=2)
    lower, upper = _boxes(network, dtype=torch.float64)
    for method in ALL:
        b = method.compute(network, lower, upper)
        assert b.output_lower.dtype == torch.float64 and b.pre_upper[0].dtype == torch.float64
    b32 = CROWN().compute(network, lower.float(), upper.float())
    assert b32.output_lower.dtype == torch.float32


def test_batched_spec_matches_shared_spec_per_box():
    network = random_network(3, 12, (4,), seed=3)
    lower, upper = _boxes(network)
    gen = torch.Generator().manual_seed(3)
    C = torch.randn(4, 2, 3, generator=gen)
    for method in (CROWN(), AlphaCROWN(iterations=3)):
        batched = method.compute(network, lower, upper, C=C)
        for b in range(4):
            single = method.compute(network, lower[b : b + 1], upper[b : b + 1], C=C[b])
            torch.testing.assert_close(batched.output_lower[b], single.output_lower[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(batched.output_upper[b], single.output_upper[0], rtol=1e-5, atol=1e-5)


def test_point_boxes_give_nearly_exact_bounds():
    network = random_network(4, 16, (1, 6, 6), conv=True, seed=4)
    # not the global generator: xdist orders tests differently per run (CROWN's widest point-box bound over
    # 200 draws: 1.1e-3, all of it rounding margin)
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    y = network(x)
    for method in ALL:
        b = method.compute(network, x, x)
        assert (b.output_lower <= y).all() and (y <= b.output_upper).all()
        # Only rounding margins remain; interval arithmetic multiplies earlier margins by |W| layer after layer.
        assert (b.output_upper - b.output_lower).max() < (0.1 if method.name == "ibp" else 2e-3)


def test_prior_is_never_loosened():
    network = random_network(4, 20, (4,), seed=5)
    lower, upper = _boxes(network, radius=0.3)
    prior = AlphaCROWN().compute(network, lower, upper)
    again = IBP().compute(network, lower, upper, prior=prior)
    assert (again.output_lower >= prior.output_lower).all() and (again.output_upper <= prior.output_upper).all()
    for i in range(4):
        assert (again.pre_lower[i] >= prior.pre_lower[i]).all() and (again.pre_upper[i] <= prior.pre_upper[i]).all()


def test_intersect_takes_elementwise_best():
    network = random_network(2, 8, (3,), seed=6)
    lower, upper = _boxes(network)
    a, b = IBP().compute(network, lower, upper), CROWN().compute(network, lower, upper)
    both = a.intersect(b)
    assert isinstance(both, Bounds) and both.method == "ibp+crown"
    assert torch.equal(both.output_lower, torch.maximum(a.output_lower, b.output_lower))
    assert torch.equal(both.pre_upper[1], torch.minimum(a.pre_upper[1], b.pre_upper[1]))


@pytest.mark.parametrize("stride, padding, dilation, size", [(1, 0, 1, 7), (2, 1, 1, 8), (2, 0, 1, 7), (3, 1, 2, 11)])
def test_conv_backward_rule_is_the_adjoint(stride, padding, dilation, size):
    gen = torch.Generator().manual_seed(7)
    layer = Conv2d(torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64),
                   torch.randn(4, generator=gen, dtype=torch.float64), (stride, stride), (padding, padding),
                   (dilation, dilation))
    shape_in = (3, size, size)
    out = layer.output_shape(shape_in)
    A = torch.randn(2, 5, *out, generator=gen, dtype=torch.float64).flatten(2)
    x = torch.randn(2, *shape_in, generator=gen, dtype=torch.float64)
    back = AFFINE_RULES["conv2d"](layer, LinearBound.of(A), shape_in)
    direct = (A * layer.forward(x).flatten(1).unsqueeze(1)).sum(-1)
    via_rule = (back.A * x.flatten(1).unsqueeze(1)).sum(-1) + back.bias
    torch.testing.assert_close(via_rule, direct)
    assert F.conv2d(x, layer.weight, None, layer.stride, layer.padding, layer.dilation).shape[1:] == out
