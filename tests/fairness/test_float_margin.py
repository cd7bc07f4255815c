"""Certificates hold for the float32 model, not only the exact one: a hidden neuron whose float32 value is
off by about 1 (cancelling large terms) must not let any engine certify an unfair model."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from certprune.errors import PropertyError
from certprune.fairness import search
from certprune.network import Dense, Network, ReLU
from certprune.types import Verdict
from tests.fairness.fairnets import brute_force, property_text, setup


@pytest.mark.parametrize("engine", ["z3", "auto"])
@pytest.mark.parametrize("c", [-2.0, -3.0])
def test_no_certificate_where_float32_rounding_flips_the_decision(tmp_path, engine, c):
    network = Network((Dense(torch.tensor([[10000001.0, c]]), torch.tensor([-30000000.0])), ReLU(),
                       Dense(torch.tensor([[1.0]]), torch.tensor([-3.5]))), (2,), None)
    text = property_text(ranges=(("s", 3, 3), ("sex", 0, 1)))
    problem, referee, parts = setup(tmp_path, network, text, "m", engine=engine)
    assert brute_force(tmp_path / "m.onnx", problem.prop, parts[0])  # the ONNX model is unfair here
    outcome = search.decide(problem, referee, parts[0], time.perf_counter() + 600)
    assert outcome.verdict is Verdict.FALSIFIED and outcome.counterexample["replayed"]


def test_argmax_over_a_sigmoid_is_refused(tmp_path):
    network = Network((Dense(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2)),), (2,), "sigmoid")
    text = property_text(ranges=(("s", 0, 3), ("sex", 0, 1)), decision="argmax")
    with pytest.raises(PropertyError, match="sigmoid"):
        setup(tmp_path, network, text, "m")


def test_float_error_is_small_without_cancellation(tmp_path):
    small = Network((Dense(torch.tensor([[1.0, 1.0]]), torch.zeros(1)), ReLU(),
                     Dense(torch.tensor([[1.0]]), torch.zeros(1))), (2,), None)
    problem, _, parts = setup(tmp_path, small, property_text(ranges=(("s", 3, 3), ("sex", 0, 1))), "s")
    lo, hi = problem.rows(parts[0])
    assert np.all(problem.float_error(lo, hi) < 1e-4)  # outputs about 4: a few ulps each


def test_pairs_on_the_threshold_are_settled_by_replay(tmp_path):
    """A fair model whose logit is exactly 0 (the threshold) at s = 500: the exact solvers only see a pair
    within the float margin, the leaf is split down to that pair and the model itself decides it."""
    network = Network((Dense(torch.tensor([[0.001, 0.0]]), torch.tensor([-0.5])), ReLU(),
                       Dense(torch.tensor([[1.0]]), torch.tensor([0.0]))), (2,), None)
    text = property_text(ranges=(("s", 0, 1000), ("sex", 0, 1)))
    problem, referee, parts = setup(tmp_path, network, text, "m", engine="auto")
    assert not brute_force(tmp_path / "m.onnx", problem.prop, parts[0])
    # a budget that cannot run out: the test ends when decided
    outcome = search.decide(problem, referee, parts[0], time.perf_counter() + 600)
    assert outcome.verdict is Verdict.VERIFIED
