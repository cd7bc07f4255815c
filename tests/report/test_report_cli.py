"""`certprune report` end to end: outputs written whole, models gated on demand, bad input is one line and exit 2."""
from __future__ import annotations

import csv

import pytest

from certprune.cli.main import main
from tests.conftest import MODELS, REPO, one_error_line

DATA = REPO / "tests" / "data" / "report"
GATES = [str(DATA / f"gate_{name}.json") for name in ("mnist_pruned", "bank_pruned", "german_fail")]


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_report_writes_html_markdown_and_csv_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code = main(["report", *GATES, str(DATA / "certify_mnist_mlp_100x2_pruned_eps0.02.json"),
                 "-o", str(out / "report.html"), "--markdown", str(out / "report.md"), "--csv", str(out / "r.csv")])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["r.csv", "report.html", "report.md"]   # no temporary left
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "mnist_mlp_100x2_pruned" in (out / "report.md").read_text()
    assert len(list(csv.DictReader((out / "r.csv").open()))) == 5
    assert "report on 5 models" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["missing.json"], "missing.json: no such file"),
    (["README.md"], "README.md: expected a result .json or a model .onnx"),
    ([str(MODELS / "mnist_mlp_100x2.onnx")], "a model needs --policy POLICY.yaml"),
    (["pyproject.toml.json"], "no such file"),
])
def test_bad_inputs_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert main(["report", *args, "-o", str(tmp_path / "r.html")]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "r.html").exists()


def test_not_a_result_leaves_the_previous_report_untouched(tmp_path, capsys):
    previous = tmp_path / "r.html"
    previous.write_text("the previous report")
    (tmp_path / "other.json").write_text('{"name": "not a result"}')
    assert main(["report", GATES[0], str(tmp_path / "other.json"), "-o", str(previous)]) == 2
    assert "not a certprune result" in one_error_line(capsys)
    assert previous.read_text() == "the previous report" and sorted(p.name for p in tmp_path.iterdir()) == \
        ["other.json", "r.html"]


@pytest.mark.parametrize("option", ["-o", "--markdown", "--csv"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, option):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    paths = {"-o": str(tmp_path / "r.html"), option: str(blocker / "sub" / "out")}
    args = [part for pair in paths.items() for part in pair]
    assert main(["report", GATES[0], *args]) == 2
    assert "is not a writable folder" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_an_output_that_is_a_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["report", GATES[0], "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err      # click's usage message


def test_a_model_is_gated_by_the_policy_and_reported(tmp_path):
    pytest.importorskip("certprune.gate.run", reason="certprune gate is not installed")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"model: {MODELS / 'mnist_mlp_100x2.onnx'}\n"
                      "checks:\n"
                      "  - name: size\n"
                      "    facts: {parity: true}\n"
                      "    require: {parameters: '<= 100000', parity: true}\n"
                      "  - name: robust\n"
                      "    certify: {data: mnist, eps: [0.01], samples: 3, timeout: 5}\n"
                      "    require: {certified_accuracy: '>= 0.5'}\n")
    out = tmp_path / "r.html"
    args = ["report", str(MODELS / "mnist_mlp_100x2.onnx"), "--policy", str(policy), "-o", str(out),
            "--markdown", str(tmp_path / "r.md"), "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(args) == 0
    text = (tmp_path / "r.md").read_text()
    assert "| gate outcome | pass |" in text and "| parameters | 89,610 |" in text
    assert "Certified accuracy vs ε on mnist (3 samples per ε)" in out.read_text()
