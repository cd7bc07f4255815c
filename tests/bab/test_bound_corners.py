"""The corners where linear lower bounds are least: exact minimisers of those bounds, and counterexamples that
signed-gradient descent cannot reach (a plateau of zero gradient around a single corner, as the outputs of
mnist_fc's networks plateau), found by the full engine and by the numpy fast path alike."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from certprune import fastpath
from certprune.bab import search
from certprune.bab.search import SearchSettings, bound_corners, verify_box
from certprune.deadline import Deadline
from certprune.network import Dense, Network, ReLU
from certprune.onnx_io import save_onnx
from certprune.runtime import OnnxRuntimeModel
from certprune.spec.vnnlib import read_vnnlib

N_IN = 20


@pytest.mark.parametrize("seed", range(3))
def test_corners_minimise_the_linear_bounds_of_the_rows_farthest_from_a_proof(seed):
    rng = np.random.default_rng(seed)
    B, K = 4, 5
    lower = torch.tensor(rng.uniform(-1, 0, (B, 2, 3)), dtype=torch.float64)
    upper = lower + torch.tensor(rng.uniform(0, 1, (B, 2, 3)))
    A = torch.tensor(rng.normal(size=(B, K, 6)))
    gap = torch.tensor(rng.normal(size=(B, K)))
    corners = bound_corners(lower, upper, A, gap, rows=2).reshape(B, 2, 6)
    rows = gap.argsort(dim=1)[:, :2]  # the two least gaps of each box
    lo, hi = lower.flatten(1), upper.flatten(1)
    for b in range(B):
        for j, r in enumerate(rows[b].tolist()):
            least = torch.minimum(A[b, r] * lo[b], A[b, r] * hi[b]).sum()
            assert torch.isclose(A[b, r] @ corners[b, j], least)
            samples = lo[b] + torch.rand(200, 6, dtype=torch.float64) * (hi[b] - lo[b])
            assert bool((samples @ A[b, r] >= least - 1e-12).all())


def _hidden_corner(seed: int):
    """y_0 = 1 and y_1 = 4 relu(s . x - 9.5) on [0, 1]^20, s in {-1, +1}^20 with ten +1: y_1 >= y_0 only near the
    corner x = (s + 1) / 2 (one of 2^20); elsewhere in the box y_1 is 0 with zero gradient."""
    rng = np.random.default_rng(seed)
    s = np.where(rng.permutation(N_IN) < 10, 1.0, -1.0)
    w1 = torch.tensor(np.stack([s, np.zeros(N_IN)]), dtype=torch.float32)
    b1 = torch.tensor([-9.5, 0.0])
    w2 = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    b2 = torch.tensor([1.0, 0.0])
    network = Network((Dense(w1, b1), ReLU(), Dense(w2, b2)), (N_IN,))
    constraints = ((np.array([[1.0, -1.0]]), np.array([0.0])),)  # unsafe: y_0 - y_1 <= 0
    return network, np.zeros(N_IN), np.ones(N_IN), constraints, (s + 1) / 2


@pytest.mark.parametrize("seed", range(2))
def test_the_full_engine_checks_the_corners_the_attack_cannot_reach(tmp_path, seed, monkeypatch):
    network, lo, hi, constraints, corner = _hidden_corner(seed)
    save_onnx(network, tmp_path / "m.onnx")
    runtime = OnnxRuntimeModel(tmp_path / "m.onnx")

    def replay(x):
        y = runtime.run_flat(x).astype(np.float64)
        return bool(y[0] - y[1] <= 0)

    settings = SearchSettings(timeout=30, seed=seed, milp_max_unstable=-1, max_domains=50)
    result = verify_box(network, lo, hi, constraints, settings, replay=replay)
    assert result.verdict.value == "falsified" and result.settings["decided_by"] == "bound corner"
    assert np.array_equal(np.asarray(result.counterexample.inputs).ravel(), corner.astype(np.float32))
    monkeypatch.setattr(search, "CORNER_ROWS", 0)  # without them the falsifier alone does not find it
    result = verify_box(network, lo, hi, constraints, settings, replay=replay)
    assert result.settings["decided_by"] != "attack"


@pytest.mark.parametrize("seed", range(2))
def test_the_fast_path_checks_the_corners_the_attack_cannot_reach(tmp_path, seed, monkeypatch):
    network, *_ = _hidden_corner(seed)
    save_onnx(network, tmp_path / "m.onnx")
    lines = [f"(declare-const X_{i} Real)" for i in range(N_IN)] + ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))" for i in range(N_IN)] + ["(assert (>= Y_1 Y_0))"]
    (tmp_path / "p.vnnlib").write_text("\n".join(lines) + "\n")
    prop = read_vnnlib(tmp_path / "p.vnnlib")
    result, details = fastpath.try_vnnlib(tmp_path / "m.onnx", prop, Deadline(math.inf), budget=5)
    assert result is not None and result.verdict.value == "falsified", details
    assert details["boxes"][0]["decided_by"] == "fast-path split" and details["boxes"][0]["domains"] == 1
    monkeypatch.setattr(fastpath, "CORNER_ROWS", 0)
    result, details = fastpath.try_vnnlib(tmp_path / "m.onnx", prop, Deadline(math.inf), budget=5)
    assert result is None, details  # the attack stalls; more than 16 free inputs are not split here
