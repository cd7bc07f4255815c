"""Whole runs: report, exit codes, JSON, certificate, journal with resume after a crash, parallel workers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.fairness.fairnets import property_text, random_net

from certprune.errors import CertpruneError, PropertyError
from certprune.fairness import verify as verify_module
from certprune.fairness.verify import format_summary, verify_fairness
from certprune.onnx_io import save_onnx
from certprune.types import Verdict

MODELS = Path(__file__).resolve().parents[2] / "models"
PROPERTIES = Path(__file__).resolve().parents[2] / "properties"


def write(tmp_path, seed, scale, **options):
    model = tmp_path / f"m{seed}.onnx"
    save_onnx(random_net(4, seed, protected=(3,), scale=scale), model)
    prop = tmp_path / f"p{seed}.yaml"
    prop.write_text(property_text(partition="{max_values: 2}", **options))
    return model, prop


def test_fair_model_is_certified_with_a_certificate(tmp_path):
    model, prop = write(tmp_path, 0, 0.0)
    report = verify_fairness(model, prop, progress=False, json_out=tmp_path / "r.json",
                             certificate_out=tmp_path / "c.json")
    assert report.verdict is Verdict.VERIFIED and report.exit_code == 0
    assert len(report.partitions) == report.total_partitions == 18
    counts = report.counts()
    assert counts["certified"]["partitions"] == 18 and counts["certified"]["share"] == 1.0
    certificate = json.loads((tmp_path / "c.json").read_text())
    assert certificate["complete"] and certificate["property_sha256"] == report.property_sha256
    assert len(certificate["model_sha256"]) == 64
    assert {p["verdict"] for p in certificate["partitions"]} == {"verified"}
    assert all(p["method"] for p in certificate["partitions"])
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["verdict"] == "verified" and data["exit_code"] == 0
    text = format_summary(report)
    assert "certified" in text and "100.00%" in text and "result: VERIFIED (exit 0)" in text


def test_unfair_model_is_falsified_with_a_replayed_pair(tmp_path):
    model, prop = write(tmp_path, 4, 1.0)
    report = verify_fairness(model, prop, progress=False, engine="z3")
    assert report.engine == "z3" and report.verdict is Verdict.FALSIFIED and report.exit_code == 10
    falsified = [p for p in report.partitions if p.verdict is Verdict.FALSIFIED]
    assert falsified and all(p.counterexample["replayed"] for p in falsified)
    counts = report.counts()
    assert sum(c["partitions"] for c in counts.values()) == 18
    assert abs(sum(c["share"] for c in counts.values()) - 1.0) < 1e-12
    assert "x' = x with sex:" in format_summary(report)


def test_journal_resume_after_an_interruption(tmp_path, monkeypatch):
    model, prop = write(tmp_path, 2, 0.3)
    journal = tmp_path / "run.jsonl"
    calls = []
    real_decide = verify_module.decide

    def flaky(problem, referee, partition, deadline):
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the sixth partition
        calls.append(partition.index)
        return real_decide(problem, referee, partition, deadline)

    monkeypatch.setattr(verify_module, "decide", flaky)
    with pytest.raises(KeyboardInterrupt):
        verify_fairness(model, prop, progress=False, journal_path=journal)
    assert len(journal.read_text().splitlines()) == 1 + 5  # header and the five finished partitions
    monkeypatch.setattr(verify_module, "decide", real_decide)
    with journal.open("a") as f:
        f.write('{"partition": 17, "verd')  # a crash cut the last line short
    resumed = verify_fairness(model, prop, progress=False, journal_path=journal, resume=True)
    fresh = verify_fairness(model, prop, progress=False)
    assert [(p.index, p.verdict) for p in resumed.partitions] == [(p.index, p.verdict) for p in fresh.partitions]
    records = [json.loads(line) for line in journal.read_text().splitlines()[1:] if line.endswith("}")]
    assert sorted(r["partition"] for r in records) == list(range(18))
    other = tmp_path / "other.yaml"
    other.write_text(prop.read_text().replace("max_values: 2", "max_values: 3"))
    with pytest.raises(CertpruneError, match="the property differs"):
        verify_fairness(model, other, progress=False, journal_path=journal, resume=True)


def test_parallel_workers_give_the_same_results(tmp_path):
    model, prop = write(tmp_path, 2, 0.3, relaxed="{c: 1}")
    serial = verify_fairness(model, prop, progress=False)
    parallel = verify_fairness(model, prop, progress=True, jobs=2, journal_path=tmp_path / "j.jsonl")
    assert [(p.index, p.verdict) for p in parallel.partitions] == [(p.index, p.verdict) for p in serial.partitions]
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 1 + 18


def test_shipped_model_and_property_quick_look():
    report = verify_fairness(MODELS / "german_small.onnx", PROPERTIES / "german_fairness_sex.yaml", progress=False,
                             limit=3)
    assert report.selected == 3 and report.total_partitions == 201
    assert report.verdict is Verdict.FALSIFIED  # the shipped German model is not fair with respect to sex
    cex = next(p.counterexample for p in report.partitions if p.counterexample)
    assert cex["x"]["sex"] != cex["x_prime"]["sex"]
    assert {k for k in cex["x"] if cex["x"][k] != cex["x_prime"][k]} == {"sex"}


def test_property_that_does_not_fit_the_model(tmp_path):
    model, _ = write(tmp_path, 0, 1.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text(property_text(ranges=(("a", 0, 3), ("sex", 0, 1))))
    with pytest.raises(PropertyError, match="bad.yaml line 2: 'attributes' lists 2 attributes but the model takes 4"):
        verify_fairness(model, bad, progress=False)


def test_total_timeout_leaves_partitions_not_run(tmp_path):
    model, prop = write(tmp_path, 0, 0.0)
    hurried = tmp_path / "hurried.yaml"
    hurried.write_text(prop.read_text().replace("timeout: {partition: 20}", "timeout: {partition: 20, total: 0.001}"))
    report = verify_fairness(model, hurried, progress=False)
    assert report.not_run == 18 and not report.partitions
    assert report.verdict is Verdict.UNKNOWN and report.exit_code == 20
    assert report.counts()["not run"]["share"] == 1.0
    quick = verify_fairness(model, prop, progress=False, limit=4)
    assert quick.selected == 4 and quick.verdict is Verdict.UNKNOWN  # all certified, but not the whole domain
