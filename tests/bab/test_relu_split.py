"""ReLU branch and bound alone (no MILP leaves, inherited bounds and slopes, scores of the optimised bound)
agrees with the exact MILP on random networks with many inputs and disjunctions of several rows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from certprune.bab.instances import Instance, verify_one
from certprune.bab.search import SearchSettings
from certprune.onnx_io import save_onnx
from certprune.types import Verdict
from tests.bounds.milp import dense_chain, exact_minimum
from tests.netgen import random_network

DECIDED = (Verdict.VERIFIED, Verdict.FALSIFIED)


def _case(seed: int):
    """A robustness-like question: is some class j != 0 at least as large as class 0 on the box?"""
    rng = np.random.default_rng(seed)
    inputs = int(rng.integers(20, 40))
    network = random_network(2, int(rng.integers(8, 14)), (inputs,), seed=seed, outputs=4)
    center = rng.uniform(-1, 1, inputs)
    radius = rng.uniform(0.1, 0.3)
    chain = dense_chain(network.to(torch.float64))
    rows = [np.eye(4)[j] - np.eye(4)[0] for j in range(1, 4)]  # y_j - y_0
    # the largest of the rows' maxima is the quantity the disjunction is about
    best = max(-exact_minimum(chain, center - radius, center + radius, -row)[0] for row in rows)
    return network, center - radius, center + radius, rows, best


@pytest.mark.parametrize("chunk", range(3))
def test_relu_splitting_agrees_with_milp(tmp_path, chunk):
    """Never a wrong verdict; a case may stay undecided within its domain budget (the sat ones that the
    falsifier, which here mostly only samples, misses), but some are proven by ReLU splitting in every chunk.
    CROWN's worst corners ("bound corner") are tried before the falsifier and find some counterexamples."""
    verdicts = [_run(tmp_path, seed) for seed in range(6 * chunk, 6 * chunk + 6)]
    assert all(v in (None, "attack", "bound corner", "relu-split") for v in verdicts), verdicts
    assert verdicts.count("relu-split") >= 2, verdicts


def test_relu_splitting_with_lookahead_agrees_with_milp(tmp_path):
    """The same with the filtered-smart-branching look-ahead, which also closes children it refutes."""
    verdicts = [_run(tmp_path, seed, relu_lookahead=3) for seed in range(6)]
    assert all(v in (None, "attack", "bound corner", "relu-split") for v in verdicts), verdicts
    assert verdicts.count("relu-split") >= 2, verdicts


@pytest.mark.parametrize("chunk", range(3))
def test_output_constraints_and_then_relu_splitting_agree_with_milp(tmp_path, chunk):
    """The same with conjunctions first refuted under their own constraint (``bounds.constrained``) and branch
    and bound on each one left, from its constrained bounds."""
    verdicts = [_run(tmp_path, seed, constrained=True) for seed in range(6 * chunk, 6 * chunk + 6)]
    assert all(v in (None, "attack", "bound corner", "output constraints", "output constraints+relu-split",
                     "relu-split") for v in verdicts), verdicts
    assert sum(v is not None and v.startswith("output constraints") for v in verdicts) >= 1, verdicts


def _run(tmp_path, seed: int, relu_lookahead: int = 1, constrained: bool = False) -> str | None:
    """What decided the search (None: undecided); 'wrong' where its verdict is not the MILP's."""
    network, lower, upper, rows, best = _case(seed)
    rng = np.random.default_rng(1000 + seed)
    b = best + rng.choice([-1, 1]) * rng.uniform(0.01, 0.08) * max(1.0, abs(best))  # y_j - y_0 >= b for some j?
    expected = Verdict.FALSIFIED if best >= b else Verdict.VERIFIED
    constraints = tuple((-row[None, :], np.array([-b])) for row in rows)  # -(y_j - y_0) <= -b
    # a budget of domains, not seconds, so that a loaded machine changes nothing but the falsifier's share
    settings = SearchSettings(timeout=60, max_domains=3000, input_split_dims=0, milp_max_unstable=-1,
                              fixed_intermediate_above=0, attack_restarts=0 if seed % 2 else 32, seed=seed,
                              relu_lookahead=relu_lookahead, constrained_relus=10**6 if constrained else 0)
    save_onnx(network, tmp_path / f"{seed}.onnx")
    result = verify_one(network, tmp_path / f"{seed}.onnx", Instance("box", lower, upper, constraints), settings)
    if result.verdict not in DECIDED:
        return None
    return result.settings["decided_by"] if result.verdict is expected else "wrong"
