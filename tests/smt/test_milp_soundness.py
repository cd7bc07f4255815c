"""An MILP "unsat" is a proof only with evidence: the fairness reproducer, and the defences behind it.

``fair_milp_unsat`` (tests/data/soundness): with feasibility tolerances of 1e-9 HiGHS called the MILP of a
32-pair fairness domain infeasible, and the domain was certified although the pair a0=10 a1=8 a2=0 a4=0 a5=9,
prot 0 -> 1 flips the decision on onnxruntime. The other tests make the first solve lie or fail on purpose
and check that no unsat gets through without a second, independent opinion.
"""
from __future__ import annotations

import numpy as np
import pytest

from certprune.fairness.verify import verify_fairness
from certprune.smt import milp as milp_module
from certprune.smt.milp import MilpStatus, solve_milp
from certprune.types import Verdict
from tests.conftest import REPO
from tests.netgen import random_network
from tests.smt.test_milp import interval_bounds

REPRO = REPO / "tests" / "data" / "soundness" / "fair_milp_unsat"


def test_fairness_domain_with_an_unfair_pair_is_not_certified():
    report = verify_fairness(REPRO / "net.onnx", REPRO / "p396.yaml", jobs=1, progress=False)
    (result,) = report.partitions
    assert result.verdict is Verdict.FALSIFIED
    pair = result.counterexample
    assert pair["replayed"] and pair["decisions"][0] != pair["decisions"][1]


def _question(seed: int, threshold: float):
    network = random_network(2, 6, (3,), seed=seed, outputs=2)
    lower, upper = -np.ones(3), np.ones(3)
    return network, lower, upper, interval_bounds(network, lower, upper), np.array([[1.0, -1.0]]), [threshold]


@pytest.fixture
def feasible():
    """A question with plenty of solutions: min (y0 - y1) is well below the threshold."""
    network, lower, upper, pre, A, _ = _question(4, 0.0)
    low = milp_module.optimize(network, lower, upper, pre, A[0], "min").value
    return network, lower, upper, pre, A, [low + 0.5]


def _lie_once(monkeypatch, answer):
    """The first solve returns ``answer``; later ones are real."""
    real = milp_module._Question.ask
    calls = []

    def ask(self, model, deadline, options):
        calls.append(options)
        return answer if len(calls) == 1 else real(self, model, deadline, options)

    monkeypatch.setattr(milp_module._Question, "ask", ask)
    return calls


@pytest.mark.parametrize("z3_limit", [0, 64])  # the second opinion by HiGHS again, then by Z3
def test_a_wrong_first_unsat_is_caught_by_the_second_opinion(monkeypatch, feasible, z3_limit):
    monkeypatch.setattr(milp_module, "Z3_CHECK_UNSTABLE", z3_limit)
    monkeypatch.setattr(milp_module, "Z3_CHECK_INPUTS", 64)
    calls = _lie_once(monkeypatch, milp_module._Answer(MilpStatus.UNSAT, None, "infeasible"))
    result = solve_milp(*feasible)
    assert result.status is MilpStatus.SAT and result.x is not None
    assert "found by" in result.reason
    if not z3_limit:
        assert calls[1] == milp_module.SECOND_OPINION


def test_a_true_unsat_has_both_opinions(feasible):
    network, lower, upper, pre, A, _ = feasible
    high = milp_module.optimize(network, lower, upper, pre, A[0], "max").value
    result = solve_milp(network, lower, upper, pre, -A, [-(high + 0.5)])
    assert result.status is MilpStatus.UNSAT and result.reason.startswith("highs+")


@pytest.mark.parametrize("status, expected", [(1, MilpStatus.TIMEOUT), (3, MilpStatus.UNKNOWN),
                                              (4, MilpStatus.UNKNOWN)])
def test_solver_statuses_other_than_optimal_or_infeasible_decide_nothing(monkeypatch, feasible, status, expected):
    """Whatever HiGHS says besides optimal/infeasible (time limit, unbounded, numerical trouble) is no proof."""
    network, lower, upper, pre, A, b = feasible

    class Failed(dict):
        __getattr__ = dict.get

    monkeypatch.setattr(milp_module, "milp", lambda *args, **kwargs: Failed(
        status=status, x=None, fun=None, message="made up", mip_dual_bound=1.0))
    result = solve_milp(network, lower, upper, pre, -A, [-1e6])  # hopeless, yet not proved
    assert result.status is expected and result.reason


def test_an_optimal_point_without_a_positive_dual_bound_is_not_a_proof(monkeypatch, feasible):
    network, lower, upper, pre, A, b = feasible

    class Optimal(dict):
        __getattr__ = dict.get

    def fake(c, **kwargs):
        return Optimal(status=0, x=np.zeros(len(c)), fun=-1.0, message="", mip_dual_bound=-1.0)

    monkeypatch.setattr(milp_module, "milp", fake)
    result = solve_milp(network, lower, upper, pre, -A, [-1e6])
    assert result.status is MilpStatus.UNKNOWN and "float32" in result.reason
