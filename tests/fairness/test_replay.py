"""Counterexamples are pairs replayed on the original ONNX file (a torch export ending in a sigmoid here)."""
from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch
from tests.fairness.fairnets import brute_force, property_text

from certprune.fairness.partition import Partitioning
from certprune.fairness.problem import FairnessProblem, FairnessSettings
from certprune.fairness.replay import Referee
from certprune.fairness.search import decide
from certprune.onnx_io import load_onnx
from certprune.spec.fairness import parse_fairness
from certprune.types import Verdict


def export_torch(tmp_path, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        model[0].weight[:, 3] *= 4  # sex matters
    path = tmp_path / "torch_model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 4), str(path), dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


def test_pairs_replayed_on_a_torch_export_with_sigmoid(tmp_path):
    path = export_torch(tmp_path)
    network = load_onnx(path)
    assert network.output_transform == "sigmoid"
    prop = parse_fairness(property_text(partition="{max_values: 2}", decision="{output: 0, threshold: -0.3}"))
    problem = FairnessProblem.create(network, prop, FairnessSettings(), path)
    referee = Referee(problem)
    parts = Partitioning(prop)
    cut = 1 / (1 + math.exp(0.3))
    falsified = 0
    for part in parts:
        outcome = decide(problem, referee, part, time.perf_counter() + 600)
        assert (outcome.verdict is Verdict.FALSIFIED) == brute_force(path, prop, part, 1, "sigmoid")
        if outcome.verdict is Verdict.FALSIFIED:
            falsified += 1
            (p1,), (p2,) = outcome.counterexample["outputs"]
            assert 0 < p1 < 1 and 0 < p2 < 1  # probabilities: the ONNX graph's own outputs
            assert (p1 > cut) != (p2 > cut)
    assert falsified > 0 and referee.replays > 0


def test_referee_refuses_what_is_not_a_counterexample(tmp_path):
    path = export_torch(tmp_path, seed=1)
    prop = parse_fairness(property_text(relaxed="{c: 1}"))
    problem = FairnessProblem.create(load_onnx(path), prop, FairnessSettings(), path)
    referee = Referee(problem)
    lo, hi = problem.rows(Partitioning(prop)[0])
    lo, hi = lo[0], hi[0]  # z = [a, b, c, sex, sex', delta_c]
    assert referee.confirm(np.array([1, 0, 2, 0, 0, 0]), lo, hi, "t") is None  # protected values equal
    assert referee.confirm(np.array([1, 0, 4, 0, 1, 1]), lo, hi, "t") is None  # c + delta = 5 leaves 0..4
    assert referee.confirm(np.array([1.5, 0, 2, 0, 1, 0]), lo, hi, "t") is None  # not an integer
    assert referee.confirm(np.array([9, 0, 2, 0, 1, 0]), lo, hi, "t") is None  # outside the box
    # a valid pair is confirmed exactly when onnxruntime's decisions differ
    rng = np.random.default_rng(0)
    for _ in range(50):
        z = np.array([rng.integers(0, 4), rng.integers(-2, 3), rng.integers(1, 4), 0, 1, rng.integers(-1, 2)])
        x1, x2 = problem.layout.pair(z[None])
        out = referee.model(np.concatenate([x1, x2]).astype(np.float32))
        found = referee.confirm(z, lo, hi, "t")
        assert (found is not None) == bool((out[0, 0] > 0.5) != (out[1, 0] > 0.5))
