"""A leaf the exact solver cannot close is not given up: the search goes on until it decides.

Three small networks written out by hand (no data files):
* a narrow peak ``y0 = 9.7 + relu(x2 + x3) - 400 (|x0 - a| + |x1 - c|)`` on a box with four fixed inputs
  (0.1 and 0.2, which no float32 equals) and two free ones, against the band ``lo <= y0 <= hi``: with
  ``lo`` just under the peak the only counterexamples lie in a sliver near the band's edge;
* a staircase ``y0 = relu(2^23 x - 2^23)`` on ``[1, 1 + 8 ulp]``: its float32 outputs are the integers 0..8,
  while the real network crosses every value between, so against the band ``3.25 <= y0 <= 3.75`` the MILP
  finds real points that no float32 input reproduces, and only splitting down to single inputs decides.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import certprune.bab.search as search_module
from certprune.bab.attack import Falsifier
from certprune.bab.instances import Instance, verify_one
from certprune.bab.search import SearchSettings, _attack_share
from certprune.deadline import Deadline
from certprune.network import Dense, Network, ReLU
from certprune.onnx_io import save_onnx
from certprune.runtime import OnnxRuntimeModel
from certprune.smt.milp import MilpResult, MilpStatus
from certprune.types import Verdict

PEAK_AT = (0.3137, 0.6071)
NO_DESCENT = {"attack_restarts": 0, "attack_steps": 0}  # the falsifier only samples: the search must find it
FIXED = np.array([0.1, 0.2, 0.1, 0.2])


def peak_network() -> Network:
    a, c = PEAK_AT
    W = torch.zeros(5, 6)
    W[0, 0], W[1, 0], W[2, 1], W[3, 1] = 1, -1, 1, -1  # |x0 - a| = relu(x0 - a) + relu(a - x0), same for x1
    W[4, 2], W[4, 3] = 1, 1                              # the fixed inputs shift the output a little
    hidden = Dense(W, torch.tensor([-a, a, -c, c, 0.0]))
    out = Dense(torch.tensor([[-400.0, -400.0, -400.0, -400.0, 1.0]]), torch.tensor([9.7]))
    return Network((hidden, ReLU(), out), (6,), None)


def band(lo: float, hi: float):
    """lo <= y0 <= hi as rows A y <= b."""
    return ((np.array([[-1.0], [1.0]]), np.array([-lo, hi])),)


def peak_box():
    return np.concatenate([[0.0, 0.0], FIXED]), np.concatenate([[1.0, 1.0], FIXED])


@pytest.mark.parametrize("input_split_dims", [16, 0], ids=["input-split", "relu-split"])
def test_band_whose_counterexamples_lie_near_its_edge(tmp_path, input_split_dims):
    network = peak_network()
    path = tmp_path / "peak.onnx"
    save_onnx(network, path)
    lower, upper = peak_box()
    settings = SearchSettings(timeout=60, input_split_dims=input_split_dims, **NO_DESCENT)
    # the peak is 10.0 (+ float32 noise): [9.99, 50] is hit only within 2.5e-5 of it, [10.1, 50] never (a
    # margin above the bounds' own rounding allowance, 2^-15 of the magnitudes, about 0.02 here)
    result = verify_one(network, path, Instance("edge", lower, upper, band(9.99, 50.0)), settings)
    assert result.verdict is Verdict.FALSIFIED, result.settings
    x = np.asarray(result.counterexample.inputs, dtype=np.float32)
    y = OnnxRuntimeModel(path)(x[None])[0, 0]
    assert 9.99 <= y <= 50.0
    assert np.array_equal(x[2:], FIXED.astype(np.float32))  # the fixed inputs as onnxruntime receives them
    beyond = verify_one(network, path, Instance("beyond", lower, upper, band(10.1, 50.0)), settings)
    assert beyond.verdict is Verdict.VERIFIED, beyond.settings


def test_descent_reaches_the_sliver_that_sampling_misses():
    lower, upper = peak_box()
    (A, b), = band(9.99, 50.0)
    sampling = Falsifier(peak_network(), lower, upper, [A], [b])
    assert sampling.round(Deadline(30), steps=0, samples=4096) is None
    descent = Falsifier(peak_network(), lower, upper, [A], [b])
    x = descent.round(Deadline(30), restarts=32, steps=100)
    assert x is not None and x[2:].tolist() == FIXED.astype(np.float32).tolist()


def staircase() -> Network:
    scale = float(2 ** 23)
    return Network((Dense(torch.tensor([[scale]]), torch.tensor([-scale])), ReLU(),
                    Dense(torch.tensor([[1.0]]), torch.tensor([0.0]))), (1,), None)


def test_milp_point_that_float32_does_not_confirm_then_splitting_decides(tmp_path):
    network = staircase()
    path = tmp_path / "stairs.onnx"
    save_onnx(network, path)
    one = np.float32(1.0)
    top = one
    for _ in range(8):
        top = np.nextafter(top, np.float32(2))
    box = (np.array([1.0]), np.array([float(top)]))
    settings = SearchSettings(timeout=60, input_split_dims=0)  # ReLU splitting, so the MILP gets the leaf
    result = verify_one(network, path, Instance("between", *box, band(3.25, 3.75)), settings)
    assert result.verdict is Verdict.VERIFIED, result.settings  # no float32 input gives a y0 in the band
    assert any(reason.startswith("milp:") for reason in result.settings["open"]), result.settings
    hit = verify_one(network, path, Instance("on", *box, band(3.25, 4.0)), settings)
    assert hit.verdict is Verdict.FALSIFIED and hit.counterexample.outputs[0] == 4.0


def test_search_goes_on_after_an_unconfirmed_milp_point(tmp_path, monkeypatch):
    """The solver's first answers are points that do not replay (the box's centre): the search starts the
    falsifier there, splits the leaf's box and still finds the counterexample near the band's edge."""
    network = peak_network()
    path = tmp_path / "peak.onnx"
    save_onnx(network, path)
    lower, upper = peak_box()
    real, calls = search_module.solve_milp, []

    def first_answers_unconfirmed(net, lo, hi, *args, **kwargs):
        calls.append(1)
        if len(calls) <= 3:
            centre = ((lo + hi) / 2).reshape(net.input_shape)
            return MilpResult(MilpStatus.UNKNOWN, reason="the solver's point does not meet the constraints "
                              "in float32", point=centre)
        return real(net, lo, hi, *args, **kwargs)

    monkeypatch.setattr(search_module, "solve_milp", first_answers_unconfirmed)
    settings = SearchSettings(timeout=60, input_split_dims=0, **NO_DESCENT)
    result = verify_one(network, path, Instance("edge", lower, upper, band(9.99, 50.0)), settings)
    assert result.verdict is Verdict.FALSIFIED, result.settings
    assert calls and result.settings["open"], result.settings


def test_falsifier_share_grows_when_a_proof_looks_far():
    class Stub:
        settings = SearchSettings(attack_share=0.1, attack_share_max=0.5)

        class falsifier:
            lowest_loss = 0.01

    assert _attack_share(Stub, margin=-10.0) > 0.49  # bounds far from a proof, falsifier nearly there
    Stub.falsifier.lowest_loss = 10.0
    assert _attack_share(Stub, margin=-0.01) < 0.11  # bounds nearly prove it
    Stub.falsifier.lowest_loss = float("inf")
    assert _attack_share(Stub, margin=-1.0) == 0.1


def test_leaf_slack_is_tighter_than_the_whole_box_bound_and_holds_at_sampled_points():
    """The MILP's clearance at a leaf (bab.search._leaf_slack) never exceeds the a-priori one and bounds the
    actual float32 error at points of the box (float32 forward pass against float64)."""
    import torch

    from certprune.bab.search import SearchSettings, _leaf_slack, _Search
    from certprune.bounds import CROWN
    from certprune.deadline import Deadline
    from tests.netgen import random_network

    network = random_network(4, 24, (6,), seed=3, outputs=3)
    lower, upper = -np.ones(6, dtype=np.float32), np.ones(6, dtype=np.float32)
    A = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    search = _Search(network, (torch.from_numpy(lower), torch.from_numpy(upper)),
                     (torch.from_numpy(lower), torch.from_numpy(upper)), ((A, np.zeros(2)),), SearchSettings(), None,
                     Deadline(60))
    bounds = CROWN().compute(network, torch.from_numpy(lower)[None], torch.from_numpy(upper)[None])
    pre = [(lo[0].double().numpy(), hi[0].double().numpy()) for lo, hi in zip(bounds.pre_lower, bounds.pre_upper)]
    slack = _leaf_slack(search, A, pre)
    apriori = np.abs(A) @ search.float_error()
    assert np.all(slack <= apriori) and np.any(slack < 0.5 * apriori)
    x = np.random.default_rng(0).uniform(-1, 1, (4000, 6)).astype(np.float32)
    with torch.no_grad():
        y32 = network(torch.from_numpy(x)).double().numpy()
        y64 = network.to(torch.float64)(torch.from_numpy(x).double()).numpy()
    assert np.all(np.abs((y32 - y64) @ A.T) <= slack)
