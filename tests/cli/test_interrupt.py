"""Ctrl-C: the terminal sends SIGINT to every process of the foreground group, parallel workers included. The
command ends with one line and exit code 130, no worker prints a traceback or outlives it, and the journal
keeps what was decided."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import MODELS, REPO


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
@pytest.mark.parametrize("delay", [0.5, 4.0])  # while the workers start (importing torch), and while they work
def test_ctrl_c_on_parallel_fairness_verification_is_one_line_and_exit_130(tmp_path, delay):
    journal = tmp_path / "j.jsonl"
    command = [sys.executable, "-m", "certprune.cli.main", "verify", str(MODELS / "adult_medium.onnx"),
               "--property", str(REPO / "properties" / "adult_fairness.yaml"), "--jobs", "2", "--journal", str(journal)]
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
    assert err.rstrip().endswith("certprune: interrupted")
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


def test_the_interrupt_line_says_how_to_keep_finished_results(monkeypatch, capsys):
    """Ctrl-C without --journal loses what finished: the one line says how to keep it next time."""
    from certprune.cli import main as cli_main

    monkeypatch.setattr(cli_main.cli, "main", lambda *a, **k: (_ for _ in ()).throw(cli_main.click.exceptions.Abort()))
    assert cli_main.main(["certify", "m.onnx", "--eps", "0.1"]) == 130
    assert "pass --journal FILE to keep them" in capsys.readouterr().err
    assert cli_main.main(["certify", "m.onnx", "--journal", "j.jsonl"]) == 130
    assert capsys.readouterr().err.strip() == "certprune: interrupted"
    assert cli_main.main(["verify", "m.onnx", "--property", "p.vnnlib"]) == 130  # no journal for one instance
    assert capsys.readouterr().err.strip() == "certprune: interrupted"
