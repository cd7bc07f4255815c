"""A query's budget over its partitions: short caps first, smallest partitions first, hard ones interleaved
with growing caps, every try journaled and the last one the partition's result."""
from __future__ import annotations

import json
import math

from tests.fairness.fairnets import property_text, random_net

from certprune.fairness import verify as verify_module
from certprune.fairness.schedule import Schedule
from certprune.fairness.search import Outcome
from certprune.fairness.verify import verify_fairness
from certprune.onnx_io import save_onnx
from certprune.types import Verdict

HARD = (4, 9)  # partitions that need at least 15 s (the others need nothing)


def test_caps_grow_to_the_partition_timeout():
    assert list(Schedule(per_partition=30).caps()) == [3.0, 12.0, 30]
    assert list(Schedule(per_partition=20).caps()) == [2.0, 8.0, 20]
    assert list(Schedule(per_partition=0.5).caps()) == [0.5]
    assert list(Schedule(per_partition=None).caps()) == [math.inf]
    assert Schedule(per_partition=5).first_order([3, 1, 2], {1: 10, 2: 4, 3: 4}) == [2, 3, 1]


def fake_decide(calls: list):
    """Decides at once, except that a HARD partition times out when its budget is below 15 s; no sleeping:
    the budget is read off the deadline it is given."""
    def decide(problem, referee, partition, deadline):
        budget = deadline - verify_module.time.perf_counter()
        calls.append((partition.index, round(budget)))
        if partition.index in HARD and budget < 15:
            return Outcome(Verdict.TIMEOUT, "timeout")
        return Outcome(Verdict.VERIFIED, "ibp")
    return decide


def write(tmp_path):
    model = tmp_path / "m.onnx"
    save_onnx(random_net(4, 0, protected=(3,), scale=0.0), model)
    prop = tmp_path / "p.yaml"
    prop.write_text(property_text(partition="{max_values: 2}", timeout=20))  # 18 partitions, 20 s each
    return model, prop


def test_hard_partitions_do_not_starve_the_rest(tmp_path, monkeypatch):
    model, prop = write(tmp_path)
    calls = []
    monkeypatch.setattr(verify_module, "decide", fake_decide(calls))
    journal = tmp_path / "j.jsonl"
    report = verify_fairness(model, prop, progress=False, journal_path=journal)
    assert report.verdict is Verdict.VERIFIED and len(report.partitions) == 18
    first = [i for i, _ in calls[:18]]
    assert sorted(first) == list(range(18)) and all(b <= 2 for _, b in calls[:18])  # everyone once, capped
    assert calls[18:] == [(4, 8), (9, 8), (4, 20), (9, 20)]  # then the hard ones, interleaved, growing caps
    hard = {p.index: p for p in report.partitions if p.index in HARD}
    assert [t["verdict"] for t in hard[4].details["tries"]] == ["timeout", "timeout", "verified"]
    assert [t["budget"] for t in hard[9].details["tries"]] == [2.0, 8.0, 20]
    lines = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    assert len(lines) == 18 + 4 and [r["partition"] for r in lines[-4:]] == [4, 9, 4, 9]


def test_small_partitions_go_first(tmp_path, monkeypatch):
    model, prop = write(tmp_path)
    calls = []
    monkeypatch.setattr(verify_module, "decide", fake_decide(calls))
    report = verify_fairness(model, prop, progress=False)
    points = {p.index: p.points for p in report.partitions}
    order = [i for i, _ in calls[:18]]
    assert [points[i] for i in order] == sorted(points[i] for i in order)


def test_resume_retries_what_was_left_undecided(tmp_path, monkeypatch):
    """A run that stopped with hard partitions undecided (their caps were all it had): resuming gives them
    another go, and the decided ones are not run again."""
    model, prop = write(tmp_path)
    journal = tmp_path / "j.jsonl"
    calls = []
    monkeypatch.setattr(verify_module, "decide", fake_decide(calls))
    short = verify_fairness(model, prop, progress=False, journal_path=journal, timeout=5)  # caps 1, 4, 5
    assert {p.index for p in short.partitions if p.verdict is Verdict.TIMEOUT} == set(HARD)
    calls.clear()
    resumed = verify_fairness(model, prop, progress=False, journal_path=journal, resume=True, timeout=5)
    assert {i for i, _ in calls} == set(HARD)
    assert len(resumed.partitions) == 18
    tries = {p.index: p.details["tries"] for p in resumed.partitions if p.index in HARD}
    assert all(len(t) == 6 for t in tries.values())  # three tries in each run, all journaled


def test_domain_share_counts_points_and_proven_sub_boxes(tmp_path, monkeypatch):
    """Shares of the domain by points; an undecided partition adds the share of its pairs it had proven."""
    model, prop = write(tmp_path)

    def decide(problem, referee, partition, deadline):
        if partition.index in HARD:
            return Outcome(Verdict.TIMEOUT, "timeout", None, {"proven_share": 0.5})
        return Outcome(Verdict.VERIFIED, "ibp", None, {"proven_share": 1.0})

    monkeypatch.setattr(verify_module, "decide", decide)
    report = verify_fairness(model, prop, progress=False, json_out=tmp_path / "r.json")
    share = report.domain_share()
    hard = sum(p.points for p in report.partitions if p.index in HARD) / report.total_points
    assert math.isclose(share["undecided"], hard) and math.isclose(share["proven_in_undecided"], hard / 2)
    assert math.isclose(share["certified"] + share["falsified"] + share["undecided"] + share["not_run"], 1.0)
    assert json.loads((tmp_path / "r.json").read_text())["domain_share"] == share
    assert "domain (points): certified" in verify_module.format_summary(report)


def test_a_certified_partition_proves_all_its_pairs(tmp_path):
    """The engine's own accounting: the ruled-out leaves of a certified partition cover all its pairs."""
    from certprune.fairness import search
    from tests.fairness.fairnets import setup

    problem, referee, parts = setup(tmp_path, random_net(4, 1, protected=(3,), scale=0.05),
                                    property_text(partition="{max_values: 3}"), "n", samples=1, attack_steps=0)
    outcomes = [search.decide(problem, referee, p, math.inf) for p in parts]
    certified = [o for o in outcomes if o.verdict is Verdict.VERIFIED]
    assert certified and all(math.isclose(o.details["proven_share"], 1.0) for o in certified)
