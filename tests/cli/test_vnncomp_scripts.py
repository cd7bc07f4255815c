"""The VNN-COMP entry scripts, run as the competition's harness runs them, on its own test benchmark."""
from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "vnncomp"
DATA = ROOT / "tests" / "data" / "vnncomp_test"  # VNN-COMP 2022 "test" benchmark files (see its README)


def _run(tmp_path, onnx: Path, vnnlib: Path, timeout: float = 30) -> str:
    env = {"CERTPRUNE_PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "CERTPRUNE_VNNCOMP_STATE": str(tmp_path)}
    prepare = subprocess.run(["bash", str(SCRIPTS / "prepare_instance.sh"), "v1", "test", str(onnx), str(vnnlib)],
                             env=env, capture_output=True, text=True)
    assert prepare.returncode == 0, prepare.stderr
    results = tmp_path / "out.txt"
    run = subprocess.run(["bash", str(SCRIPTS / "run_instance.sh"), "v1", "test", str(onnx), str(vnnlib),
                          str(results), str(timeout)], env=env, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return results.read_text()


@pytest.mark.parametrize("onnx,vnnlib,expected", [
    ("test_sat.onnx", "test_prop.vnnlib", "sat"),
    ("test_unsat.onnx", "test_prop.vnnlib", "unsat"),
    ("test_small.onnx", "test_small.vnnlib", "unsat"),  # input of rank 1, MatMul with the weight on the left
])
def test_run_instance_writes_the_competition_answer(tmp_path, onnx, vnnlib, expected):
    text = _run(tmp_path, DATA / onnx, DATA / vnnlib)
    assert text.splitlines()[0] == expected
    if expected == "sat":
        assert "(X_0 " in text and "(Y_0 " in text


def test_gzipped_files_are_unpacked(tmp_path):
    for name in ("test_sat.onnx", "test_prop.vnnlib"):
        with open(DATA / name, "rb") as source, gzip.open(tmp_path / f"{name}.gz", "wb") as target:
            shutil.copyfileobj(source, target)
    assert _run(tmp_path, tmp_path / "test_sat.onnx.gz", tmp_path / "test_prop.vnnlib.gz").startswith("sat")


def test_prepare_stops_only_what_run_instance_left_running(tmp_path):
    leftover = subprocess.Popen(["sleep", "60"])
    other = subprocess.Popen(["sleep", "60"])  # someone else's process: untouched
    (tmp_path / "run.pid").write_text(f"{leftover.pid}\n")
    env = {"PATH": "/usr/bin:/bin", "CERTPRUNE_VNNCOMP_STATE": str(tmp_path)}
    prepare = subprocess.run(["bash", str(SCRIPTS / "prepare_instance.sh"), "v1", "test", str(DATA / "test_sat.onnx"),
                              str(DATA / "test_prop.vnnlib")], env=env, capture_output=True, text=True)
    assert prepare.returncode == 0, prepare.stderr
    assert leftover.wait(timeout=10) != 0 and other.poll() is None
    other.kill()


def test_a_missing_file_fails_prepare(tmp_path):
    missing = subprocess.run(["bash", str(SCRIPTS / "prepare_instance.sh"), "v1", "test", str(tmp_path / "no.onnx"),
                              str(DATA / "test_prop.vnnlib")], capture_output=True, text=True)
    assert missing.returncode == 1 and "missing file" in missing.stderr
