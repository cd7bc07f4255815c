"""Requirements are judged on intervals: undecided work can make a check inconclusive, never pass or fail it."""
from __future__ import annotations

import pytest

from certprune.gate.rules import combine, judge, metric_interval
from certprune.spec.policy import Requirement, Threshold


def certify_figures(verified, falsified, undecided, samples=10):
    return {"per_eps": {"0.02": {"samples": samples, "verified": verified, "falsified": falsified,
                                 "undecided": undecided}}}


@pytest.mark.parametrize("verified, undecided, outcome", [(8, 0, "pass"), (7, 2, "inconclusive"), (6, 1, "fail"),
                                                          (8, 2, "pass")])
def test_certified_accuracy_needs_the_whole_interval(verified, undecided, outcome):
    figures = certify_figures(verified, 10 - verified - undecided, undecided)
    value = metric_interval("certify", figures, "certified_accuracy", 0.02)
    row = judge(Requirement("certified_accuracy", Threshold(">=", 0.8), eps=0.02), value)
    assert row["outcome"] == outcome and row["range"] == [verified / 10, (verified + undecided) / 10]


def test_falsified_share_counts_undecided_against_it():
    value = metric_interval("certify", certify_figures(7, 1, 2), "falsified", 0.02)
    assert judge(Requirement("falsified", Threshold("<=", 0.2)), value)["outcome"] == "inconclusive"
    assert judge(Requirement("falsified", Threshold("<=", 0.3)), value)["outcome"] == "pass"
    assert judge(Requirement("falsified", Threshold("<", 0.1)), value)["outcome"] == "fail"


def test_vs_baseline_judges_the_difference():
    rule = Requirement("certified_accuracy", Threshold(">=", -0.02), vs_baseline=True)
    assert judge(rule, (0.80, 0.80), (0.81, 0.81))["outcome"] == "pass"
    assert judge(rule, (0.70, 0.70), (0.81, 0.81))["outcome"] == "fail"
    assert judge(rule, (0.70, 0.90), (0.81, 0.81))["outcome"] == "inconclusive"
    assert judge(rule, (0.80, 0.80), None)["outcome"] == "inconclusive"
    exact = Requirement("certified_accuracy", Threshold(">=", -0.05), vs_baseline=True)
    assert judge(exact, (0.85, 0.85), (0.90, 0.90))["outcome"] == "pass"  # not -0.05000000000000004


def test_boolean_rules_and_combination():
    holds = Requirement("holds", True)
    assert [judge(holds, v)["outcome"] for v in (True, False, None)] == ["pass", "fail", "inconclusive"]
    assert combine(["pass", "inconclusive"]) == "inconclusive" and combine(["inconclusive", "fail"]) == "fail"
    assert combine(["pass", "pass"]) == "pass"
