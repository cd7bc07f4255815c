"""Ctrl-C: the terminal sends SIGINT to every process of the foreground group, parallel workers included. The
command ends with one line and exit code 130, no worker prints a traceback or outlives it, and the journal
keeps what was decided."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ACASXU, MODELS, REPO


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
@pytest.mark.parametrize("workers, delay", [  # while the workers start (importing torch), and while they work
    (["--jobs", "2"], 0.5), (["--jobs", "2"], 4.0), (["--cluster", "local:2"], 8.0)])
def test_ctrl_c_on_parallel_fairness_verification_is_one_line_and_exit_130(tmp_path, workers, delay):
    if workers[0] == "--cluster":
        pytest.importorskip("distributed")
    journal = tmp_path / "j.jsonl"
    command = [sys.executable, "-m", "certprune.cli.main", "verify", str(MODELS / "adult_medium.onnx"),
               "--property", str(REPO / "properties" / "adult_fairness.yaml"), *workers, "--journal", str(journal)]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started = time.monotonic()
    while not journal.exists() and time.monotonic() - started < 60:  # the workers start after the journal
        time.sleep(0.05)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGINT)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the command did not end within 30 s of Ctrl-C")
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.rstrip().endswith(f"certprune: interrupted; finished results are kept in {journal}: run the same "
                                 "command with --resume to continue")
    if shutil.which("ps"):
        assert not _group_alive(process.pid, within=10), "a worker outlived the command"
    lines = journal.read_text().splitlines()
    assert lines and lines[0].startswith('{"journal"')


def _group_alive(group: int, within: float) -> bool:
    """Whether some process of the group is still running (not a zombie) after ``within`` seconds."""
    ends = time.monotonic() + within
    while time.monotonic() < ends:
        states = subprocess.run(["ps", "-o", "stat=", "-g", str(group)], capture_output=True, text=True).stdout.split()
        if all(state.startswith("Z") for state in states):
            return False
        time.sleep(0.1)
    return True


def test_the_interrupt_line_says_how_prune_keeps_finished_rounds(monkeypatch, capsys):
    """prune keeps its rounds only in a --journal checkpoint: without one, the line says how to keep them."""
    from certprune.cli import main as cli_main

    monkeypatch.setattr(cli_main.cli, "main", lambda *a, **k: (_ for _ in ()).throw(cli_main.click.exceptions.Abort()))
    assert cli_main.main(["prune", "m.onnx", "--data", "mnist"]) == 130
    assert "pass --journal FILE to keep them" in capsys.readouterr().err
    assert cli_main.main(["prune", "m.onnx", "--journal", "j.ckpt"]) == 130
    assert capsys.readouterr().err.strip() == ("certprune: interrupted; finished rounds are kept in j.ckpt: run the "
                                               "same command with --resume to continue")
    assert cli_main.main(["certify", "m.onnx", "--journal=j.jsonl", "--resume"]) == 130
    assert capsys.readouterr().err.strip() == ("certprune: interrupted; finished results are kept in j.jsonl: run it "
                                               "again to continue")
    assert cli_main.main(["verify", "m.onnx", "--property", "p.vnnlib"]) == 130  # no journal for one instance
    assert capsys.readouterr().err.strip() == "certprune: interrupted"


def _interrupt_on_call(monkeypatch, module, name: str, call: int) -> None:
    """Make ``module.name`` raise KeyboardInterrupt (Ctrl-C) on its ``call``-th call, and work before."""
    original, calls = getattr(module, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def _kept_journal(err: str, tmp_path):
    """The journal file the interrupt line names, checked to be in the current folder (tmp_path)."""
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("certprune: interrupted; ") and "--resume to continue" in line, line
    name = line.split(" kept in ")[1].split(":")[0]
    assert (tmp_path / name).is_file() and name.endswith(".journal.jsonl")
    return name, line


def test_ctrl_c_on_certify_without_journal_keeps_the_finished_samples_and_resumes(tmp_path, monkeypatch, capsys):
    """Nothing finished is lost: without --journal the two finished samples go to a journal file named in the
    one line, and resuming it gives what an uninterrupted run gives, the first two samples not run again."""
    import certprune.bab.certify as certify_module
    from certprune.cli.main import main

    monkeypatch.chdir(tmp_path)
    args = ["certify", str(MODELS / "mnist_mlp_100x2.onnx"), "--eps", "0.01", "-n", "4", "--quiet"]
    assert main(args + ["--json", "whole.json"]) == 0
    capsys.readouterr()
    _interrupt_on_call(monkeypatch, certify_module, "certify_one", 3)
    assert main(args) == 130
    name, line = _kept_journal(capsys.readouterr().err, tmp_path)
    assert line.startswith("certprune: interrupted; 2 finished result(s) kept in certprune-certify-")
    assert len((tmp_path / name).read_text().splitlines()) == 1 + 2
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    ran = []
    original = certify_module.certify_one
    monkeypatch.setattr(certify_module, "certify_one", lambda *a, **k: ran.append(a[2].index) or original(*a, **k))
    assert main(args + ["--journal", name, "--resume", "--json", "resumed.json"]) == 0
    whole, resumed = (json.loads((tmp_path / f).read_text()) for f in ("whole.json", "resumed.json"))
    assert ran == [s["index"] for s in whole["samples"][2:]]
    def verdicts(report):
        return [(s["index"], s["status"]) for s in report["samples"]]

    assert verdicts(resumed) == verdicts(whole)
    assert resumed["totals"] == whole["totals"]


def test_ctrl_c_before_any_result_finished_writes_no_file(tmp_path, monkeypatch, capsys):
    import certprune.bab.certify as certify_module
    from certprune.cli.main import main

    monkeypatch.chdir(tmp_path)
    _interrupt_on_call(monkeypatch, certify_module, "certify_one", 1)
    assert main(["certify", str(MODELS / "mnist_mlp_100x2.onnx"), "--eps", "0.01", "-n", "3", "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == "certprune: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_on_batch_without_journal_keeps_the_finished_rows(tmp_path, monkeypatch, capsys, acasxu_dir):
    import certprune.cli.batch_cmd as batch_module
    from certprune.cli.main import main

    monkeypatch.chdir(tmp_path)
    onnx = ACASXU / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx"
    (tmp_path / "instances.csv").write_text("".join(f"{onnx},{acasxu_dir / 'vnnlib' / p},60\n"
                                                    for p in ("prop_3.vnnlib", "prop_4.vnnlib", "prop_1.vnnlib")))
    _interrupt_on_call(monkeypatch, batch_module, "decide_vnnlib", 2)
    assert main(["batch", "instances.csv"]) == 130
    name, line = _kept_journal(capsys.readouterr().err, tmp_path)
    assert line.startswith("certprune: interrupted; 1 finished result(s) kept in certprune-batch-")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert main(["batch", "instances.csv", "--journal", name, "--resume", "--out", "r.csv"]) == 0
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["result"] for r in rows] == ["unsat", "unsat", "unsat"]


def test_ctrl_c_on_fairness_without_journal_keeps_the_finished_partitions(tmp_path, monkeypatch, capsys):
    import certprune.fairness.verify as fairness_module
    from certprune.cli.main import main

    monkeypatch.chdir(tmp_path)
    _interrupt_on_call(monkeypatch, fairness_module._Worker, "run", 4)
    args = ["verify", str(MODELS / "german_small.onnx"), "--property",
            str(REPO / "properties" / "german_fairness_sex.yaml"), "--limit", "5", "--quiet"]
    assert main(args) == 130
    name, line = _kept_journal(capsys.readouterr().err, tmp_path)
    assert line.startswith("certprune: interrupted; 3 finished result(s) kept in certprune-fairness-")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert main(args + ["--journal", name, "--resume", "--json", "r.json"]) == 10
    assert len(json.loads((tmp_path / "r.json").read_text())["partitions"]) == 5


def test_the_library_and_the_gate_write_no_journal_file_of_their_own_on_ctrl_c(tmp_path, monkeypatch):
    """Holding results for a journal file is the CLI's `verify`: the gate (which has its own cache) and a
    script calling verify_fairness get the plain KeyboardInterrupt and no file appears."""
    import certprune.fairness.verify as fairness_module

    monkeypatch.chdir(tmp_path)
    _interrupt_on_call(monkeypatch, fairness_module._Worker, "run", 3)
    with pytest.raises(KeyboardInterrupt) as raised:
        fairness_module.verify_fairness(MODELS / "german_small.onnx", REPO / "properties" / "german_fairness_sex.yaml",
                                        limit=5, progress=False)
    assert type(raised.value) is KeyboardInterrupt and list(tmp_path.iterdir()) == []
