"""The commands end to end: exit codes 0 / 10 / 20 / 2, the files they write, and one-line user errors."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from certprune.cli.main import main
from tests.conftest import ACASXU, MODELS, REPO, one_error_line

PROPERTIES = REPO / "properties"
MNIST = str(MODELS / "mnist_mlp_100x2.onnx")
GERMAN = str(MODELS / "german_small.onnx")


def acas(net: str) -> str:
    return str(ACASXU / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx")



def test_vnnlib_sat_writes_the_vnncomp_results_file(tmp_path, acasxu_dir):
    results = tmp_path / "out.txt"
    code = main(["verify", acas("1_2"), "--property", str(acasxu_dir / "vnnlib" / "prop_2.vnnlib"),
                 "--timeout", "60", "--results-file", str(results), "--json", str(tmp_path / "r.json")])
    assert code == 10
    lines = results.read_text().splitlines()
    assert lines[0] == "sat" and lines[1].startswith("((X_0 ") and any(line.startswith(" (Y_4 ") for line in lines)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["result"] == "sat" and len(report["counterexample"]["x"]) == 5


def test_vnnlib_unsat(tmp_path, acasxu_dir):
    results = tmp_path / "out.txt"
    code = main(["verify", acas("1_1"), "--property", str(acasxu_dir / "vnnlib" / "prop_1.vnnlib"),
                 "--results-file", str(results)])
    assert code == 0 and results.read_text().splitlines() == ["unsat"]


def test_robustness_yaml_holds(capsys):
    assert main(["verify", MNIST, "--property", str(PROPERTIES / "mnist_robustness.yaml"), "--quiet"]) == 0
    assert "result: VERIFIED (exit 0)" in capsys.readouterr().out


def test_fairness_counterexample_certificate_and_resume(tmp_path, capsys):
    args = ["verify", GERMAN, "--property", str(PROPERTIES / "german_fairness_sex.yaml"), "--quiet",
            "--limit", "6", "--journal", str(tmp_path / "j.jsonl"), "--json", str(tmp_path / "r.json"),
            "--certificate", str(tmp_path / "c.json")]
    assert main(args) == 10
    assert "replayed on onnxruntime" in capsys.readouterr().out
    certificate = json.loads((tmp_path / "c.json").read_text())
    assert len(certificate["model_sha256"]) == 64 and certificate["partitions"]
    journal_lines = (tmp_path / "j.jsonl").read_text().splitlines()
    assert len(journal_lines) == 1 + 6
    assert main(args + ["--resume"]) == 10  # nothing left to do: the journal holds every partition
    assert (tmp_path / "j.jsonl").read_text().splitlines() == journal_lines


def test_certify_writes_totals(tmp_path):
    out = tmp_path / "c.json"
    assert main(["certify", MNIST, "--eps", "0.01", "-n", "3", "--quiet", "--json", str(out)]) == 0
    totals = json.loads(out.read_text())["totals"]
    assert totals["samples"] == 3 and totals["verified"] + totals["falsified"] + totals["misclassified"] == 3


def test_an_output_in_a_missing_folder_is_written_and_an_unwritable_one_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "c.json"
    assert main(["certify", MNIST, "--eps", "0.01", "-n", "2", "--quiet", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["totals"]["samples"] == 2
    capsys.readouterr()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["certify", MNIST, "--eps", "0.01", "-n", "2", "--quiet", "--json", str(blocker / "c.json")]) == 2
    line = one_error_line(capsys)
    assert "cannot write --json" in line and "a-file" in line
    assert main(["verify", MNIST, "--property", str(PROPERTIES / "mnist_robustness.yaml"), "--json",
                 str(tmp_path)]) == 2
    assert "is a folder, not a file name" in one_error_line(capsys)


def test_certify_a_fairness_table(tmp_path):
    out = tmp_path / "c.json"
    assert main(["certify", GERMAN, "--data", "german", "--eps", "0.01", "-n", "5", "--quiet",
                 "--json", str(out)]) == 0
    records = json.loads(out.read_text())["samples"]
    assert len(records) == 5 and {r["status"] for r in records} <= {"verified", "falsified", "misclassified"}


def _batch(tmp_path, *rows: tuple) -> tuple[int, list[dict]]:
    """``certprune batch`` on an instances CSV of (onnx, vnnlib, expected) rows, 60 s each: exit code, CSV rows."""
    instances, out = tmp_path / "instances.csv", tmp_path / "results.csv"
    instances.write_text("".join(f"{onnx},{vnnlib},60,{expected}\n" for onnx, vnnlib, expected in rows))
    out.unlink(missing_ok=True)
    code = main(["batch", str(instances), "--out", str(out)])
    return code, list(csv.DictReader(out.open())) if out.exists() else []


def test_batch_table_and_csv(tmp_path, acasxu_dir):
    code, rows = _batch(tmp_path, (acas("1_1"), acasxu_dir / "vnnlib" / "prop_1.vnnlib", "unsat"),
                        (acas("1_7"), acasxu_dir / "vnnlib" / "prop_3.vnnlib", "sat"))
    assert code == 10
    assert [r["result"] for r in rows] == ["unsat", "sat"]


def test_batch_decides_as_verify_does_and_reports_a_bad_row_without_stopping(tmp_path, acasxu_dir, capsys):
    """The same engine as ``verify`` (its fast path decides 1_1 prop_3 here); a row whose property does not fit
    the model ends as "error" with the message, the other rows run and the CSV has them all; a missing file is
    named before anything runs."""
    wrong = tmp_path / "two_inputs.vnnlib"
    wrong.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                     "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n"
                     "(assert (<= Y_0 0))\n")
    prop_3 = acasxu_dir / "vnnlib" / "prop_3.vnnlib"
    code, rows = _batch(tmp_path, (acas("1_1"), wrong, "unsat"), (acas("1_1"), prop_3, "unsat"))
    assert code == 20
    assert [r["result"] for r in rows] == ["error", "unsat"]
    assert rows[0]["error"] and rows[0]["correct"] == "False" and not rows[1]["error"]
    assert _batch(tmp_path, (acas("1_1"), prop_3, "unsta"))[0] == 2  # a typo in expected is named, not "wrong"
    assert "expected answer 'unsta' is none of sat, unsat" in capsys.readouterr().err
    code, rows = _batch(tmp_path, (acas("1_1"), wrong, ""), (acas("1_1"), prop_3, ""))
    assert [r["correct"] for r in rows] == ["", ""]  # no expected answer: neither right nor wrong
    assert "2 instances, 0 disagreeing" in capsys.readouterr().out
    code, _ = _batch(tmp_path, (acas("1_1"), prop_3, "unsat"), (tmp_path / "missing.onnx", wrong, "unsat"))
    printed = capsys.readouterr()
    assert code == 2 and printed.out == ""  # not even the table's header above the error
    assert printed.err.count("\n") == 1 and "line 2: onnx file not found" in printed.err


def test_bounds_json(tmp_path, capsys):
    centre = tmp_path / "x.npy"
    np.save(centre, np.full(784, 0.5, dtype=np.float32))
    assert main(["bounds", MNIST, "--center", str(centre), "--eps", "0.01", "--method", "crown", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    lower, upper = np.array(report["output_lower"]), np.array(report["output_upper"])
    assert lower.shape == (10,) and np.all(lower <= upper)


@pytest.mark.parametrize("args, message", [
    (["verify", GERMAN, "--property", str(PROPERTIES / "adult_fairness.yaml")], "13 attributes but the model"),
    (["verify", GERMAN, "--property", "missing.vnnlib"], "cannot read property file"),
    (["certify", GERMAN, "--eps", "0.1"], "takes inputs of shape (20,), the data has 784 values"),
    (["verify", MNIST, "--property", str(PROPERTIES / "mnist_robustness.yaml"), "--results-file", "r.txt"],
     "--results-file is VNN-COMP's results file of a VNN-LIB property"),
    (["prune", MNIST, "--method", "magnitude", "--sparsity", "0.5", "--data", "mnist", "--lottery", "--rounds", "2",
      "-o", "p.onnx"], "--rounds does not apply with --lottery"),
    (["certify", MNIST, "--eps", "0.01", "-n", "1", "--resume"], "--resume needs --journal FILE"),
    (["verify", MNIST, "--property", str(PROPERTIES / "mnist_robustness.yaml"), "--resume"], "--resume needs --journal"),
    (["verify", MNIST, "--property", str(PROPERTIES / "mnist_robustness.yaml"), "--jobs", "2"],
     "--jobs applies to fairness properties only"),
    (["verify", GERMAN, "--property", "p.vnnlib", "--journal", "j.jsonl"], "--journal applies to fairness and"),
])
def test_user_errors_are_one_line_with_exit_2(capsys, args, message):
    assert main(args) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize("args", [
    ["verify", MNIST, "--property", str(PROPERTIES / "mnist_robustness.yaml"), "--timeout", "nan"],
    ["certify", MNIST, "--eps", "nan", "-n", "1"],
    ["certify", MNIST, "--eps", "inf", "-n", "1"],
    ["inspect", MNIST, "--range", "1", "0"],
    ["inspect", MNIST, "--range", "nan", "1"],
    ["bounds", MNIST, "--box", "box.json", "--eps", "nan"],
    ["batch", "instances.csv", "--timeout", "-1"],  # was a traceback
    ["batch", "instances.csv", "--timeout", "0"],  # was silently ignored
    ["certify", MNIST, "--eps", "0.01", "--timeout", "0"],
    ["verify", MNIST, "--property", str(PROPERTIES / "mnist_robustness.yaml"), "--timeout", "0"],
])
def test_numbers_no_command_can_use_are_usage_errors(args, capsys):
    """NaN anywhere, infinite sizes, a range out of order, a timeout of 0 or less: click's usage error (exit 2),
    before any work."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("not a finite number" in err or "LO must be below HI" in err
                                       or "not a number of seconds above 0" in err), err


def test_bounds_names_a_box_it_cannot_use(tmp_path, capsys):
    centre = np.full(784, 0.5, dtype=np.float32)
    centre[3] = np.nan
    np.save(tmp_path / "x.npy", centre)
    assert main(["bounds", MNIST, "--center", str(tmp_path / "x.npy"), "--eps", "0.01"]) == 2
    assert "box lower is not finite at input 3" in one_error_line(capsys)
    np.save(tmp_path / "x.npy", np.full(784, 0.5, dtype=np.float32))
    assert main(["bounds", MNIST, "--center", str(tmp_path / "x.npy"), "--eps", "-0.1"]) == 2
    assert "--eps must be >= 0" in one_error_line(capsys)


def test_an_empty_instances_file_is_an_error(tmp_path, capsys):
    """It exited 0 with '0 instances': a CI step over an empty list passed."""
    (tmp_path / "instances.csv").write_text("onnx,vnnlib,timeout\n")
    assert main(["batch", str(tmp_path / "instances.csv")]) == 2
    assert "no instances" in one_error_line(capsys)
