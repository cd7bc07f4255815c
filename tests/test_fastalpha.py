"""alpha-CROWN in the numpy fast path: its gradient is the bound's derivative, its bounds hold (sampled
outputs, onnxruntime, an exact MILP optimum) and are never below CROWN's, and the search that uses them
decides what it decided before in fewer boxes."""
from __future__ import annotations

import math

import numpy as np
import pytest

from certprune import fastalpha, fastpath
from certprune.deadline import Deadline
from certprune.onnx_io import save_onnx
from certprune.runtime import OnnxRuntimeModel
from certprune.smt.milp import optimize
from certprune.spec.vnnlib import read_vnnlib
from tests.conftest import ACASXU
from tests.netgen import random_network


def _setting(tmp_path, seed: int, boxes: int = 6, width: float = 1.0):
    rng = np.random.default_rng(seed)
    network = random_network(3, 10, (4,), seed=seed, outputs=3)
    save_onnx(network, tmp_path / "m.onnx")
    chain = fastpath.read_chain(tmp_path / "m.onnx")
    C = rng.normal(size=(4, 3))
    centre = rng.normal(size=(boxes, 4))
    radius = rng.uniform(0.2, width, size=(boxes, 4))
    return network, chain, C, centre - radius, centre + radius, rng


@pytest.mark.parametrize("seed", range(3))
def test_gradient_is_the_derivative_of_the_bound(tmp_path, seed):
    """Central differences of the (unwidened) bound in each unstable neuron's slope, at random slopes."""
    _, chain, C, lo, hi, rng = _setting(tmp_path, seed)
    bounder = fastpath.Bounder(chain, C, rel=0.0)
    layers = bounder.layers(lo, hi)
    unstable = [(bias > 0)[:, None, :] & np.ones((1, len(C), 1), bool) for _, _, bias in layers.relaxations]
    slopes = [np.where(u, rng.uniform(0.2, 0.8, size=u.shape), lower[:, None, :])
              for u, (lower, _, _) in zip(unstable, layers.relaxations)]
    trace: list = []
    _, coefficients = bounder.rows(layers, C, slopes, trace)
    gradients = fastalpha._gradients(bounder, layers, slopes, trace[::-1], coefficients)
    checked, step = 0, 1e-6
    for k, mask in enumerate(unstable):
        for b, r, i in zip(*np.nonzero(mask)):
            moved = []
            for sign in (1, -1):
                changed = [s.copy() for s in slopes]
                changed[k][b, r, i] += sign * step
                moved.append(bounder.rows(layers, C, changed)[0][b, r])
            assert (moved[0] - moved[1]) / (2 * step) == pytest.approx(gradients[k][b, r, i], rel=1e-4, abs=1e-6)
            checked += 1
    assert checked > 20


@pytest.mark.parametrize("seed", range(4))
def test_optimised_bounds_hold_and_are_never_below_crowns(tmp_path, seed):
    network, chain, C, lo, hi, rng = _setting(tmp_path, seed)
    bounder = fastpath.Bounder(chain, C)
    crown = bounder.lower(lo, hi)
    alpha = fastalpha.optimised_lower(bounder, bounder.layers(lo, hi), steps=20)
    assert np.all(alpha >= crown)
    assert np.mean(alpha > crown + 1e-6) > 0.3  # it does optimise
    # one row per box optimised (the search's choice): the others keep the floor given
    rows = rng.integers(0, len(C), size=(len(lo), 1))
    one = fastalpha.optimised_lower(bounder, bounder.layers(lo, hi), steps=20, rows=rows, floor=crown)
    chosen = np.zeros_like(crown, dtype=bool)
    chosen[np.arange(len(lo)), rows[:, 0]] = True
    assert np.all(one[~chosen] == crown[~chosen]) and np.all(one[chosen] == pytest.approx(alpha[chosen]))
    runtime = OnnxRuntimeModel(tmp_path / "m.onnx")
    for b in range(len(lo)):
        x = (lo[b] + rng.random((300, 4)) * (hi[b] - lo[b])).astype(np.float32)
        for y in (runtime(x).astype(np.float64), chain.forward(x)[0].astype(np.float64)):
            assert np.all(y @ C.T >= alpha[b]) and np.all(y @ C.T >= one[b]), (seed, b)
    # an exact optimum (HiGHS, its point evaluated forward in float64) is never below the bound
    for b, r in ((0, 0), (1, 2)):
        pre = [(r_lo[0], r_hi[0]) for r_lo, r_hi in _pre_bounds(bounder, lo[b:b + 1], hi[b:b + 1])]
        best = optimize(network, lo[b], hi[b], pre, C[r], sense="min", time_limit=30)
        assert best.value >= alpha[b, r] - 1e-9


def _pre_bounds(bounder, lo, hi):
    """Every ReLU layer's input bounds as Bounder.layers finds them (valid, so the MILP may use them)."""
    found = []
    original = fastpath._relax

    def record(z_lo, z_hi):
        found.append((z_lo, z_hi))
        return original(z_lo, z_hi)

    fastpath._relax = record
    try:
        bounder.layers(lo, hi)
    finally:
        fastpath._relax = original
    return found


def test_alpha_closes_boxes_crown_leaves_open_in_the_search(monkeypatch):
    """An ACAS Xu dev instance decided by input splitting: the same answer in fewer bounded boxes."""
    prop = read_vnnlib(ACASXU / "vnnlib" / "prop_2.vnnlib")
    model = ACASXU / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx"
    boxes = {}
    for steps in (0, fastpath.ALPHA_STEPS):
        monkeypatch.setattr(fastpath, "ALPHA_STEPS", steps)
        monkeypatch.setattr(fastpath, "ALPHA_DEPTH", 2)
        result, details = fastpath.try_vnnlib(model, prop, Deadline(math.inf), budget=math.inf, max_domains=50_000)
        assert result is not None and result.verdict.value == "verified"
        boxes[steps] = sum(b["domains"] for b in details["boxes"])
    assert boxes[fastpath.ALPHA_STEPS] < boxes[0]


def test_fixed_coordinates_do_not_count_as_halvings(monkeypatch):
    """Depth is counted over the free coordinates: prop_4's box, one of them fixed, gets alpha only on halves
    halved ALPHA_DEPTH times (a fixed coordinate once counted as 1022 halvings and sent every half to it)."""
    prop = read_vnnlib(ACASXU / "vnnlib" / "prop_4.vnnlib")
    model = ACASXU / "onnx" / "ACASXU_run2a_1_2_batch_2000.onnx"
    box = prop.disjuncts[0]
    free = np.asarray(box.upper) > np.asarray(box.lower)
    assert not free.all()
    depths = []
    original = fastpath.optimised_lower

    def spy(bounder, layers, *args, **kwargs):
        lo, hi = layers.box
        widths = (np.asarray(box.upper) - np.asarray(box.lower))[free]
        depths.extend(np.log2(widths / (hi - lo)[:, free]).sum(axis=1).round(3))
        return original(bounder, layers, *args, **kwargs)

    monkeypatch.setattr(fastpath, "optimised_lower", spy)
    monkeypatch.setattr(fastpath, "ALPHA_DEPTH", 3)
    result, _ = fastpath.try_vnnlib(model, prop, Deadline(math.inf), budget=math.inf, max_domains=50_000)
    assert result is not None
    assert depths and min(depths) >= 3 - 0.5 - 1e-6
