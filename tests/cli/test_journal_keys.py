"""Journals are keyed by content: --resume refuses a changed model, property, data or setting (exit 2, one
line naming what differs) and reuses the records of the very same question, wherever its files now lie."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import certprune
from certprune.bab import certify as certify_module
from certprune.cli.main import main
from certprune.onnx_io import save_onnx
from tests.cli.test_commands import GERMAN, MODELS, one_error_line
from tests.fairness.fairnets import property_text, random_net

STALE = Path(__file__).resolve().parents[1] / "data" / "soundness" / "robustness_journal_stale"
VNNLIB = """(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(assert (>= X_0 1.75))
(assert (<= X_0 2.25))
(assert (>= X_1 -0.25))
(assert (<= X_1 0.25))
(assert (>= Y_0 0.0))
"""


@pytest.fixture
def stale(tmp_path, monkeypatch):
    """The reproducer's files in a fresh folder (the working directory), with the fair model as m.onnx."""
    for name in ("fair.onnx", "unfair.onnx", "rob.yaml"):
        shutil.copyfile(STALE / name, tmp_path / name)
    shutil.copyfile(tmp_path / "fair.onnx", tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def verify(*extra: str) -> int:
    return main(["verify", "m.onnx", "--property", "rob.yaml", "--journal", "R.jsonl", "--quiet", *extra])


def test_a_swapped_model_is_refused_and_a_fresh_run_falsifies(stale, capsys):
    assert verify() == 0
    shutil.copyfile(stale / "unfair.onnx", stale / "m.onnx")
    capsys.readouterr()
    assert verify("--resume") == 2
    line = one_error_line(capsys)
    assert "R.jsonl" in line and "the model differs" in line and "remove it or pick another" in line
    assert verify() == 2  # without --resume the journal's finished results are not overwritten either
    assert "already holds" in one_error_line(capsys) and (stale / "R.jsonl").stat().st_size > 0
    (stale / "R.jsonl").unlink()
    assert verify() == 10  # a fresh journal, and the truth comes out
    assert main(["verify", "m.onnx", "--property", "rob.yaml", "--quiet"]) == 10


def test_changed_points_are_refused(stale, capsys):
    assert verify() == 0
    text = (stale / "rob.yaml").read_text()
    (stale / "rob.yaml").write_text(text.replace("x: [4.0, 1.0]", "x: [4.0, 1.5]"))
    capsys.readouterr()
    assert verify("--resume") == 2
    assert "the data differs" in one_error_line(capsys)


def test_changed_samples_from_an_unchanged_property_file_are_refused(stale, capsys):
    (stale / "rob.yaml").write_text("kind: robustness\ninput_range: [-10.0, 10.0]\neps: 0.25\nfile: s.npz\n")
    np.savez(stale / "s.npz", x=np.array([[2.0, 0.0]]), y=np.array([0]))
    assert verify() == 0
    np.savez(stale / "s.npz", x=np.array([[2.0, 0.5]]), y=np.array([0]))
    capsys.readouterr()
    assert verify("--resume") == 2
    line = one_error_line(capsys)
    assert "the data differs" in line and "property" not in line


def test_a_changed_timeout_is_refused(stale, capsys):
    assert verify() == 0
    capsys.readouterr()
    assert verify("--resume", "--timeout", "5") == 2
    assert "setting search.timeout was 60.0, now 5.0" in one_error_line(capsys)


def test_the_same_question_resumes_from_a_moved_folder_and_reuses_its_records(stale, monkeypatch):
    assert verify() == 0
    lines = (stale / "R.jsonl").read_text()
    moved = stale / "moved"
    moved.mkdir()
    for name in ("m.onnx", "rob.yaml", "R.jsonl"):
        shutil.move(stale / name, moved / name)
    monkeypatch.chdir(moved)

    def recompute(*args, **kwargs):
        raise AssertionError("a journaled sample was verified again")

    monkeypatch.setattr(certify_module, "certify_one", recompute)
    assert verify("--resume") == 0
    assert (moved / "R.jsonl").read_text() == lines


def test_the_header_holds_digests_settings_and_version(stale):
    assert verify() == 0
    header = json.loads((stale / "R.jsonl").read_text().splitlines()[0])["journal"]
    assert header["kind"] == "robustness" and header["version"] == certprune.__version__
    assert set(header["sha256"]) == {"model", "property", "data"}
    assert all(len(digest) == 64 for digest in header["sha256"].values())
    assert header["settings"]["eps"] == 0.25 and header["settings"]["search"]["timeout"] == 60.0
    assert "m.onnx" not in json.dumps(header)  # content, never paths


def test_certify_refuses_a_changed_model(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    shutil.copyfile(GERMAN, model)
    args = ["certify", str(model), "--data", "german", "--eps", "0.01", "-n", "2", "--quiet",
            "--journal", str(tmp_path / "c.jsonl")]
    assert main(args) == 0
    assert main(args + ["--resume"]) == 0
    shutil.copyfile(MODELS / "german_medium.onnx", model)
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2
    assert "the model differs" in one_error_line(capsys)
    assert main(args[:-2] + ["--eps", "0.02", "--journal", str(tmp_path / "c.jsonl"), "--resume"]) == 2
    line = one_error_line(capsys)
    assert "setting eps was 0.01, now 0.02" in line and "the boxes differ (sha256)" in line
    assert "the data differs" not in line  # the same samples, at another eps
    assert main(args[:6] + ["-n", "3", "--quiet", "--journal", str(tmp_path / "c.jsonl"), "--resume"]) == 2
    assert "setting samples was 2, now 3" in one_error_line(capsys)


def test_batch_refuses_a_changed_model_and_resumes_a_moved_folder(tmp_path, capsys):
    folder = tmp_path / "bench"
    folder.mkdir()
    shutil.copyfile(STALE / "fair.onnx", folder / "m.onnx")
    (folder / "p.vnnlib").write_text(VNNLIB)
    (folder / "instances.csv").write_text("m.onnx,p.vnnlib,30\nm.onnx,p.vnnlib,30\n")
    journal = str(tmp_path / "b.jsonl")
    assert main(["batch", str(folder / "instances.csv"), "--journal", journal]) in (0, 10)
    lines = Path(journal).read_text()
    moved = tmp_path / "elsewhere"
    shutil.move(folder, moved)
    assert main(["batch", str(moved / "instances.csv"), "--journal", journal, "--resume"]) in (0, 10)
    assert Path(journal).read_text() == lines  # both rows reused
    shutil.copyfile(STALE / "unfair.onnx", moved / "m.onnx")
    capsys.readouterr()
    assert main(["batch", str(moved / "instances.csv"), "--journal", journal, "--resume"]) == 2
    assert "the model of instances 1, 2 differ" in one_error_line(capsys)


def test_fairness_refuses_a_changed_model(tmp_path, capsys):
    model, prop = tmp_path / "m.onnx", tmp_path / "p.yaml"
    save_onnx(random_net(4, 0, protected=(3,), scale=0.0), model)
    prop.write_text(property_text(partition="{max_values: 2}"))
    args = ["verify", str(model), "--property", str(prop), "--quiet", "--journal", str(tmp_path / "f.jsonl")]
    assert main(args) == 0
    save_onnx(random_net(4, 4, protected=(3,), scale=1.0), model)
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2
    assert "the model differs" in one_error_line(capsys)
