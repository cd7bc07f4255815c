"""Soundness of the complete search: every verdict on random networks agrees with the exact MILP."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from certprune.bab.instances import Instance, verify_one
from certprune.bab.search import SearchSettings, verify_box
from certprune.bounds import IBP
from certprune.network import Dense, Network, ReLU
from certprune.onnx_io import save_onnx
from certprune.smt.milp import optimize
from certprune.types import Verdict
from tests.netgen import random_network

CASES = 200


def _case(seed: int):
    rng = np.random.default_rng(seed)
    dims = int(rng.integers(1, 5))
    network = random_network(int(rng.integers(1, 4)), int(rng.integers(2, 9)), (dims,), seed=seed, outputs=3,
                             affine=bool(seed % 3 == 0))
    center = rng.uniform(-1, 1, dims)
    radius = rng.uniform(0.05, 1.0)
    lower, upper = center - radius, center + radius
    c = np.zeros(3)
    i, j = rng.choice(3, size=2, replace=False)
    c[i], c[j] = 1.0, -1.0
    return rng, network, lower, upper, c


def _exact_minimum(network, lower, upper, c) -> float:
    lo = torch.tensor(lower, dtype=torch.float64).unsqueeze(0)
    hi = torch.tensor(upper, dtype=torch.float64).unsqueeze(0)
    bounds = IBP().compute(network.to(torch.float64), lo, hi)
    pre = [(bounds.pre_lower[k][0].numpy(), bounds.pre_upper[k][0].numpy()) for k in range(len(bounds.pre_lower))]
    return optimize(network, lower, upper, pre, c, sense="min").value


@pytest.mark.parametrize("chunk", range(4))
def test_verdicts_agree_with_exact_milp(tmp_path, chunk):
    """A property 'c @ y <= b has no solution' with b near the exact minimum: sat and unsat both occur."""
    disagreements, seen = [], {Verdict.VERIFIED: 0, Verdict.FALSIFIED: 0}
    decided = (Verdict.VERIFIED, Verdict.FALSIFIED)
    for seed in range(chunk * CASES // 4, (chunk + 1) * CASES // 4):
        rng, network, lower, upper, c = _case(seed)
        minimum = _exact_minimum(network, lower, upper, c)
        b = minimum + rng.uniform(-0.5, 0.5) * max(1e-2, abs(minimum))
        if abs(b - minimum) < 1e-4:
            continue  # too close to a tie to have a float32 answer
        expected = Verdict.FALSIFIED if minimum <= b else Verdict.VERIFIED
        path = tmp_path / f"net{seed}.onnx"
        save_onnx(network, path)
        # Odd seeds split ReLUs, every other one with the root's intermediate bounds kept (beta-CROWN style,
        # weaker on deep nets: there an undecided answer is allowed, a wrong one never).
        fixed = seed % 4 == 1
        # Budgets no loaded machine exhausts for the cases that must decide (the verdicts are compared, not the
        # speed); the fixed-intermediate ones may end undecided, so they keep a short one.
        settings = SearchSettings(timeout=10 if fixed else 600, input_split_dims=0 if seed % 2 else 16, seed=seed,
                                  milp_max_unstable=(8, 16, 48)[seed % 3], fixed_intermediate_above=0 if fixed else 100)
        instance = Instance(f"case{seed}", lower, upper, ((c[None, :], np.array([b])),))
        result = verify_one(network, path, instance, settings)
        seen[result.verdict] = seen.get(result.verdict, 0) + 1
        if result.verdict is not expected and (not fixed or result.verdict in decided):
            disagreements.append((seed, result.verdict, expected, minimum, b))
        if result.verdict is Verdict.FALSIFIED:
            assert result.counterexample.replayed
            x = np.asarray(result.counterexample.inputs)
            assert np.all(x >= lower - 1e-6) and np.all(x <= upper + 1e-6)
    assert disagreements == []
    assert seen[Verdict.VERIFIED] > 5 and seen[Verdict.FALSIFIED] > 5


def test_zero_timeout_is_refused():
    network = random_network(1, 3, (2,), seed=0)
    with pytest.raises(ValueError, match="timeout"):
        verify_box(network, np.zeros(2), np.ones(2), ((np.array([[1.0, -1.0, 0.0]]), np.zeros(1)),),
                   SearchSettings(timeout=0))


def test_exact_leaf_leaves_room_for_float32_rounding(tmp_path):
    """The real network stays below 0 on the box, the float32 one (and onnxruntime) does not: the MILP
    leaf must not call that verified."""
    n = 17
    network = Network((Dense(torch.full((1, n), 1000001.0), torch.tensor([-51000048.0])), ReLU(),
                       Dense(torch.tensor([[1.0]]), torch.tensor([-3.5]))), (n,), None)
    save_onnx(network, tmp_path / "m.onnx")
    instance = Instance("box", np.zeros(n), np.full(n, 3.0), ((np.array([[-1.0]]), np.array([0.0])),))  # y >= 0
    for restarts in (0, 16):
        result = verify_one(network, tmp_path / "m.onnx", instance,
                            SearchSettings(timeout=20, attack_restarts=restarts, attack_steps=restarts))
        assert result.verdict is not Verdict.VERIFIED, result.settings


def test_few_unstable_neurons_at_the_root_go_to_the_exact_milp(tmp_path):
    """A box with few unstable neurons is decided by the MILP at the root, where input splitting near a tie ran
    for a million boxes: a threshold 1e-4 below the exact minimum is proven (by the MILP where CROWN cannot),
    1e-4 above it is falsified (and the counterexample replayed on onnxruntime)."""
    from tests.bounds.milp import dense_chain, exact_minimum

    deciders = []
    for seed in range(6):
        network = random_network(2, 6, (4,), seed=seed, outputs=2)
        save_onnx(network, tmp_path / "net.onnx")
        centre = np.random.default_rng(seed).uniform(-1, 1, 4)
        lower, upper = centre - 0.1, centre + 0.1
        row = np.array([1.0, -1.0])
        minimum = exact_minimum(dense_chain(network.to(torch.float64)), lower, upper, row)[0]
        settings = SearchSettings(timeout=30, max_domains=4, seed=seed)

        def run(b):  # is there an x with y0 - y1 <= b?
            instance = Instance("box", lower, upper, ((row[None], np.array([b])),))
            return verify_one(network, tmp_path / "net.onnx", instance, settings)

        proven = run(minimum - 1e-4)
        assert proven.verdict is Verdict.VERIFIED, (seed, proven.settings)
        deciders.append(proven.settings["decided_by"])
        assert run(minimum + 1e-4).verdict is Verdict.FALSIFIED, seed
    assert deciders.count("milp") >= 3, deciders
