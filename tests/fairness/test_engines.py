"""Every engine agrees with brute force over every integer pair on tiny domains, and with each other."""
from __future__ import annotations

import time

import numpy as np
import pytest
from tests.fairness.fairnets import brute_force, property_text, random_net, setup

from certprune.fairness import search
from certprune.fairness.smt import ExactAnswer
from certprune.types import Verdict

# (seed, scale of the protected inputs' weights, property options, outputs, final transform)
CASES = [
    (0, 0.0, {}, 1, None),                                             # sex ignored: fair everywhere
    (1, 0.05, {}, 1, None),
    (2, 0.3, {"relaxed": "{c: 1}"}, 1, None),                          # x' may also move c by one
    (3, 1.0, {"decision": "{output: 0, threshold: 0.2}"}, 1, "sigmoid"),
    (5, 0.2, {"protected": "{c: [0, 2, 4], sex: all}"}, 1, None),      # two protected attributes
    (6, 0.1, {"decision": "argmax"}, 3, None),
    (7, 0.05, {"relaxed": "{a: 1}", "decision": "argmax"}, 3, "softmax"),
]


def run(tmp_path, case, **settings):
    seed, scale, options, outputs, transform = case
    net = random_net(4, seed, protected=(2, 3) if "protected" in options else (3,), scale=scale, outputs=outputs,
                     transform=transform)
    problem, referee, parts = setup(tmp_path, net, property_text(partition="{max_values: 3}", **options),
                                    f"net{seed}", **settings)
    # a budget no loaded machine exhausts: the verdicts are compared, not the speed (benchmarks measure that)
    return problem, [search.decide(problem, referee, p, time.perf_counter() + 600) for p in parts], parts


@pytest.mark.parametrize("case", CASES, ids=[f"seed{c[0]}" for c in CASES])
def test_auto_and_z3_agree_with_brute_force(tmp_path, case):
    problem, auto, parts = run(tmp_path, case, engine="auto")
    _, z3, _ = run(tmp_path, case, engine="z3")
    _, blind, _ = run(tmp_path, case, engine="auto", samples=1, attack_steps=0)  # counterexamples by MILP
    truth = [brute_force(tmp_path / f"net{case[0]}.onnx", problem.prop, p, case[3], case[4]) for p in parts]
    expected = [Verdict.FALSIFIED if t else Verdict.VERIFIED for t in truth]
    assert [o.verdict for o in auto] == expected
    assert [o.verdict for o in z3] == expected
    assert [o.verdict for o in blind] == expected
    for outcome in auto + z3 + blind:
        if outcome.verdict is Verdict.FALSIFIED:
            check_pair(problem, outcome.counterexample)
    if case[1] == 0.0:
        assert all(o.verdict is Verdict.VERIFIED for o in auto)


def check_pair(problem, cex):
    """The pair differs in a protected attribute, agrees elsewhere (up to tolerances), decisions differ."""
    x, y = cex["x"], cex["x_prime"]
    assert cex["replayed"] and cex["decisions"][0] != cex["decisions"][1]
    assert any(x[n] != y[n] for n in problem.prop.protected)
    for name in problem.prop.names:
        if name not in problem.prop.protected:
            assert abs(x[name] - y[name]) <= problem.prop.relaxed.get(name, 0)
    assert problem.rule.decide_outputs(np.array(cex["outputs"])).tolist() == cex["decisions"]


def test_pruning_by_bounds_does_not_change_verdicts(tmp_path):
    case = (1, 0.05, {}, 1, None)
    problem, pruned, _ = run(tmp_path, case, engine="z3")
    _, plain, _ = run(tmp_path, case, engine="z3", prune=False)
    assert [o.verdict for o in pruned] == [o.verdict for o in plain]
    assert all(o.details["pruning"] is None for o in plain)
    stats = [o.details["pruning"] for o in pruned]
    assert sum(s["copy1"]["inactive"] + s["copy2"]["inactive"] for s in stats) > 0  # something was removed
    assert all(s["stable_by"].keys() == {"ibp", "crown"} for s in stats)
    assert sum(o.details["unstable"] for o in pruned) < sum(o.details["unstable"] for o in plain)


def test_splitting_to_points_without_milp(tmp_path):
    """With the MILP out of reach, branch and bound alone (down to single pairs) decides the same."""
    case = (1, 0.05, {}, 1, None)
    _, exact, _ = run(tmp_path, case, engine="auto")
    _, split, _ = run(tmp_path, case, engine="auto", milp_unstable=-1, samples=1, attack_steps=0)
    assert [o.verdict for o in split] == [o.verdict for o in exact]
    assert sum(o.details.get("leaves", 0) for o in split) > sum(o.details.get("leaves", 0) for o in exact)
    assert all(o.details.get("milp_calls", 0) == 0 for o in split)


def test_z3_takes_over_when_the_milp_cannot_tell(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "decide_milp", lambda *args, **kwargs: ExactAnswer("unknown"))
    case = (2, 0.3, {"relaxed": "{c: 1}"}, 1, None)
    _, fallback, _ = run(tmp_path, case, engine="auto", samples=1, attack_steps=0)
    monkeypatch.undo()
    _, direct, _ = run(tmp_path, case, engine="auto")
    assert [o.verdict for o in fallback] == [o.verdict for o in direct]
    assert sum(o.details.get("z3_calls", 0) for o in fallback) > 0
