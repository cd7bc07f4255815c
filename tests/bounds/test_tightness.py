"""Tighter methods are tighter: CROWN within IBP, alpha-CROWN within CROWN, beta helping under splits."""
from __future__ import annotations

import pytest
import torch

from certprune.bounds import CROWN, IBP, AlphaCROWN, Cascade
from tests.netgen import random_network

from .test_soundness import random_splits

# (depth, width, input shape, conv)
NETWORKS = [(2, 20, (5,), False), (4, 30, (6,), False), (6, 50, (8,), False), (3, 6, (2, 8, 8), True),
            (5, 8, (2, 6, 6), True)]


def _problem(index: int, radius: float = 0.1):
    depth, width, shape, conv = NETWORKS[index]
    network = random_network(depth, width, shape, conv=conv, seed=index, affine=index % 2 == 1)
    gen = torch.Generator().manual_seed(index)
    center = torch.rand(8, *shape, generator=gen) * 2 - 1
    return network, center - radius, center + radius, gen


def _width(bounds):
    return bounds.output_upper - bounds.output_lower


@pytest.mark.parametrize("index", range(len(NETWORKS)))
def test_crown_within_ibp_and_alpha_within_crown(index):
    network, lower, upper, _ = _problem(index)
    ibp, crown, alpha = (m.compute(network, lower, upper) for m in (IBP(), CROWN(), AlphaCROWN()))
    assert (_width(crown) <= _width(ibp)).all()
    assert (alpha.output_lower >= crown.output_lower).all() and (alpha.output_upper <= crown.output_upper).all()
    for i in range(len(ibp.pre_lower)):
        # Interval arithmetic on tighter inputs may round an ulp differently, hence the slack.
        slack = 1e-6 * (1 + ibp.pre_lower[i].abs() + ibp.pre_upper[i].abs())
        assert (crown.pre_lower[i] >= ibp.pre_lower[i] - slack).all()
        assert (crown.pre_upper[i] <= ibp.pre_upper[i] + slack).all()
        assert crown.unstable(i).sum() <= ibp.unstable(i).sum()
    if index > 0:  # beyond one hidden layer, back-substitution and optimised slopes pay off
        assert _width(crown).mean() < 0.8 * _width(ibp).mean()
        assert _width(alpha).mean() < 0.99 * _width(crown).mean()


def test_beta_improves_lower_bounds_under_splits_on_average():
    gains = []
    for index in range(len(NETWORKS)):
        network, lower, upper, gen = _problem(index)
        splits = random_splits(network, lower, upper, gen, per_box=4)
        plain = AlphaCROWN(beta=False).compute(network, lower, upper, splits=splits)
        beta = AlphaCROWN(beta=True).compute(network, lower, upper, splits=splits)
        gains.append(float((beta.output_lower - plain.output_lower).mean()))
    assert sum(gains) > 0 and min(gains) > -1e-3, gains


def test_cascade_is_elementwise_best_of_its_methods():
    network, lower, upper, _ = _problem(2)
    results = [m.compute(network, lower, upper) for m in (IBP(), CROWN(), AlphaCROWN(iterations=5))]
    cascade = Cascade(methods=(IBP(), CROWN(), AlphaCROWN(iterations=5))).compute(network, lower, upper)
    for r in results:
        assert (cascade.output_lower >= r.output_lower).all() and (cascade.output_upper <= r.output_upper).all()
        for i in range(len(r.pre_lower)):
            assert (cascade.pre_lower[i] >= r.pre_lower[i]).all()
            assert (cascade.pre_upper[i] <= r.pre_upper[i]).all()
    assert cascade.method == "ibp+crown+alpha-crown"


def test_cascade_stops_when_the_goal_is_met():
    network, lower, upper, _ = _problem(1)
    calls = []

    def goal(bounds):
        calls.append(bounds.method)
        return bounds.method.endswith("crown")

    result = Cascade(until=goal).compute(network, lower, upper)
    assert calls == ["ibp", "ibp+crown"] and result.method == "ibp+crown"


def test_splits_clamp_bounds_and_empty_subdomains_are_flagged():
    network, lower, upper, _ = _problem(1)
    crown = CROWN().compute(network, lower, upper)
    splits = [torch.zeros(s.shape, dtype=torch.int8) for s in crown.pre_lower]
    unstable = torch.nonzero(crown.unstable(1)[0].flatten()).flatten()
    inactive = torch.nonzero(crown.stable_inactive(0)[1].flatten()).flatten()
    splits[1][0, unstable[0]], splits[1][0, unstable[1]] = 1, -1
    splits[0][1, inactive[0]] = 1  # box 1: force active a neuron that cannot be: empty subdomain
    for method in (IBP(), CROWN(), AlphaCROWN(iterations=3)):
        b = method.compute(network, lower, upper, splits=splits)
        assert b.pre_lower[1][0, unstable[0]] >= 0 and b.pre_upper[1][0, unstable[1]] <= 0
        assert b.infeasible.tolist() == [False, True] + [False] * 6
        assert torch.isposinf(b.output_lower[1]).all() and torch.isneginf(b.output_upper[1]).all()
        assert torch.isfinite(b.output_lower[0]).all()


@pytest.mark.parametrize("model", ["mnist_mlp_100x2", "mnist_mlp_256x3"])
def test_shipped_mnist_mlps_tighten_from_ibp_to_crown_to_alpha(model):
    from certprune.data import load_mnist
    from certprune.onnx_io import load_onnx
    from tests.conftest import MODELS

    network = load_onnx(MODELS / f"{model}.onnx")
    centre = load_mnist("test")[0][:4].reshape(4, *network.input_shape).float()
    for eps in (0.01, 0.05):
        lower, upper = (centre - eps).clamp(0, 1), (centre + eps).clamp(0, 1)
        ibp, crown, alpha = (_width(m.compute(network, lower, upper)).mean()
                             for m in (IBP(), CROWN(), AlphaCROWN(iterations=5)))
        assert crown < ibp and alpha <= crown
