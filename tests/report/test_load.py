"""Reading result files: each kind of certprune JSON becomes checks in the gate's shape, merged per model."""
from __future__ import annotations

import json
import re

import pytest

from certprune.report.convert import detect
from certprune.report.load import ReportError, load_results
from certprune.report.summary import references, summarize
from tests.conftest import REPO

DATA = REPO / "tests" / "data" / "report"
KINDS = {"gate_mnist_pruned.json": "gate", "gate_bank_pruned.json": "gate", "gate_german_fail.json": "gate",
         "certify_mnist_mlp_100x2_eps0.01.json": "certify", "verify_fairness_german_small.json": "fairness",
         "verify_vnnlib_acasxu_1_2_prop_2.json": "vnnlib", "verify_robustness_mnist.json": "robustness"}


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)   # result files name models relative to the repository root


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_fixture_is_recognised(name):
    assert detect(json.loads((DATA / name).read_text())) == KINDS[name]


def test_a_gate_with_a_baseline_gives_two_models_baseline_first():
    baseline, pruned = load_results([str(DATA / "gate_mnist_pruned.json")])
    assert (baseline.name, pruned.name) == ("mnist_mlp_100x2", "mnist_mlp_100x2_pruned")
    assert baseline.baseline_only and baseline.outcome is None and pruned.outcome == "fail"
    assert pruned.baseline == baseline.key == baseline.sha256
    assert [c["name"] for c in baseline.checks] == [c["name"] for c in pruned.checks]
    assert all(not c["requirements"] and not c["counterexamples"] for c in baseline.checks)
    assert references([baseline, pruned]) == [None, 0]


def test_certify_results_of_one_model_merge_into_one_check_with_every_eps():
    files = [str(DATA / f"certify_mnist_mlp_100x2_eps{eps}.json") for eps in ("0.01", "0.02")]
    (model,) = load_results(files)
    (check,) = model.checks
    assert check["kind"] == "certify" and list(check["figures"]["per_eps"]) == ["0.01", "0.02"]
    assert check["settings"]["eps"] == [0.01, 0.02] and check["outcome"] is None
    (row,) = summarize([model])
    assert row.robust[("mnist", 0.01)]["certified_accuracy"] == pytest.approx(0.9)
    assert row.clean_accuracy == pytest.approx(0.95) and row.clean_accuracy_samples == 20   # from misclassified
    assert any(len(c["x"]) == 784 and len(c["outputs"]) == 10 for c in check["counterexamples"])


def test_a_certify_result_given_twice_or_as_a_prefix_lists_each_counterexample_once(tmp_path):
    """Two certify files at one eps, one over the first 10 samples of the other: the larger is kept, and so
    are its counterexamples only (before, both files' were summed: the prefix's were listed twice)."""
    whole = json.loads((DATA / "certify_mnist_mlp_100x2_eps0.02.json").read_text())
    assert sum(r.get("counterexample_x") is not None for r in whole["samples"][:10]) >= 1
    prefix = {**whole, "samples": whole["samples"][:10]}
    (tmp_path / "prefix.json").write_text(json.dumps(prefix))
    count = sum(r.get("counterexample_x") is not None for r in whole["samples"])
    for order in ([str(tmp_path / "prefix.json"), str(DATA / "certify_mnist_mlp_100x2_eps0.02.json")],
                  [str(DATA / "certify_mnist_mlp_100x2_eps0.02.json"), str(tmp_path / "prefix.json")],
                  [str(DATA / "certify_mnist_mlp_100x2_eps0.02.json")] * 2):
        (model,) = load_results(order)
        (check,) = model.checks
        labels = [c["label"] for c in check["counterexamples"]]
        assert len(labels) == len(set(labels)) == count, order
        assert len(check["figures"]["per_eps"]["0.02"]["records"]) == len(whole["samples"])


def test_results_without_a_sha256_join_the_model_file_they_name():
    models = load_results([str(DATA / "gate_mnist_pruned.json"), str(DATA / "certify_mnist_mlp_100x2_eps0.01.json"),
                           str(DATA / "certify_mnist_mlp_100x2_pruned_eps0.02.json")])
    assert [m.name for m in models] == ["mnist_mlp_100x2", "mnist_mlp_100x2_pruned"]
    dense, pruned = models
    assert not dense.baseline_only and {c["name"] for c in dense.checks} >= {"robust-mnist", "certify mnist"}
    assert len(pruned.sources) == 2


def test_fairness_and_vnnlib_results_become_checks_with_counterexamples():
    german, acas = load_results([str(DATA / "verify_fairness_german_small.json"),
                                 str(DATA / "verify_vnnlib_acasxu_1_2_prop_2.json")])
    (fair,) = german.checks
    pair = fair["counterexamples"][0]
    assert fair["figures"]["holds"] is False and fair["figures"]["partitions"] == 201
    assert pair["names"][-1] == "sex" and pair["x"][-1] != pair["x_prime"][-1]
    assert pair["decisions"][0] != pair["decisions"][1]
    (vnnlib,) = acas.checks
    assert vnnlib["figures"] == {"verdict": "falsified", "holds": False}
    assert len(vnnlib["counterexamples"][0]["x"]) == 5 and len(vnnlib["counterexamples"][0]["outputs"]) == 5


def test_one_model_file_merges_and_two_with_one_stem_are_told_apart(tmp_path):
    same = load_results([str(DATA / "gate_mnist_pruned.json"), str(DATA / "verify_robustness_mnist.json")])
    assert [m.name for m in same] == ["mnist_mlp_100x2", "mnist_mlp_100x2_pruned"]   # same bytes, one model
    other = json.loads((DATA / "certify_mnist_mlp_100x2_eps0.01.json").read_text())
    other["model"] = "elsewhere/mnist_mlp_100x2.onnx"
    (tmp_path / "other.json").write_text(json.dumps(other))
    models = load_results([str(DATA / "verify_robustness_mnist.json"), str(tmp_path / "other.json")])
    assert [m.name for m in models] == ["mnist_mlp_100x2 (b6b7a920)",
                                        "mnist_mlp_100x2 (elsewhere/mnist_mlp_100x2.onnx)"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON (line 1"),
    ('{"kind": "gate"}', "not a certprune result"),
    ("[1, 2]", "not a certprune result"),
    ('{"kind": "gate", "checks": [{"name": "a"}], "model": {"path": "m.onnx"}, "outcome": "pass"}',
     "malformed gate result (missing kind)"),
    ('{"kind": "gate", "checks": [{"name": "a", "kind": "certify", "figures": {"data": "mnist", "samples": 1}}],'
     ' "model": {"path": "m.onnx"}, "outcome": "pass"}', "lacks per_eps"),
])
def test_bad_result_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(ReportError, match=re.escape(message)) as error:
        load_results([str(path)])
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_binary_and_folder_inputs(tmp_path):
    (tmp_path / "b.json").write_bytes(b"\x89PNG\x00\xff")
    for path, message in ((tmp_path / "none.json", "no such file"), (tmp_path / "b.json", "not a text file"),
                          (tmp_path, "is a folder")):
        with pytest.raises(ReportError, match=message):
            load_results([str(path)])


def test_at_an_eps_both_files_measured_the_result_over_more_samples_is_kept_in_either_order(tmp_path):
    full = json.loads((DATA / "certify_mnist_mlp_100x2_eps0.01.json").read_text())
    few = {**full, "samples": full["samples"][:5]}
    (tmp_path / "full.json").write_text(json.dumps(full))
    (tmp_path / "few.json").write_text(json.dumps(few))
    for order in (["full", "few"], ["few", "full"]):
        (model,) = load_results([str(tmp_path / f"{name}.json") for name in order])
        (check,) = model.checks
        assert check["figures"]["samples"] == len(full["samples"])
        assert len(check["figures"]["per_eps"]["0.01"]["records"]) == len(full["samples"])


def test_report_o_with_a_csv_or_markdown_name_is_refused(tmp_path, capsys):
    from certprune.cli.main import main

    assert main(["report", str(DATA / "gate_mnist_pruned.json"), "-o", str(tmp_path / "r.csv")]) == 2
    assert "-o writes the HTML report, name it .html" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()
