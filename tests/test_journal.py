"""The JSONL journal: resume returns what was done, a torn last line is cut, and a journal of another model,
property, data, settings or version is refused with one line naming what differs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from certprune.errors import CertpruneError
from certprune.journal import Journal, content_sha256, file_sha256, journal_header
from certprune.version import __version__


def test_resume_returns_finished_records(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"eps": 0.02})
    assert journal.start(resume=True) == []
    journal.append({"index": 0, "status": "verified"})
    journal.append({"index": 1, "status": "falsified"})
    assert [r["index"] for r in Journal(path, {"eps": 0.02}).start(resume=True)] == [0, 1]


def test_start_without_resume_starts_afresh_over_a_journal_with_no_results(tmp_path):
    path = tmp_path / "j.jsonl"
    Journal(path, {"eps": 0.05}).start(resume=False)
    assert Journal(path, {"eps": 0.02}).start(resume=False) == []
    assert path.read_text().splitlines() == ['{"journal": {"eps": 0.02}}']


def test_start_without_resume_refuses_to_overwrite_finished_results(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"eps": 0.02})
    journal.start(resume=False)
    journal.append({"index": 0})
    journal.append({"index": 1})
    with pytest.raises(CertpruneError, match="already holds 2 finished result"):
        Journal(path, {"eps": 0.05}).start(resume=False)
    assert len(path.read_text().splitlines()) == 3  # untouched


def test_torn_last_line_is_cut_and_appending_continues(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"eps": 0.02})
    journal.start(resume=False)
    journal.append({"index": 0})
    with path.open("a") as f:
        f.write('{"index": 1, "sta')  # a crash in the middle of a write
    resumed = Journal(path, {"eps": 0.02})
    assert [r["index"] for r in resumed.start(resume=True)] == [0]
    resumed.append({"index": 1})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r.get("index") for r in lines[1:]] == [0, 1]


def test_other_settings_are_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    Journal(path, {"eps": 0.02}).start(resume=False)
    with pytest.raises(CertpruneError, match="does not fit this run: eps was 0.02, now 0.05; remove it"):
        Journal(path, {"eps": 0.05}).start(resume=True)


def header(model: str = "a" * 64, timeout: float = 60.0) -> dict:
    return journal_header("robustness", {"model": model, "data": "d" * 64},
                          {"eps": 0.1, "search": {"timeout": timeout}})


def refusal(tmp_path, written: dict, wanted: dict) -> str:
    path = tmp_path / "j.jsonl"
    Journal(path, written).start(resume=False)
    with pytest.raises(CertpruneError) as error:
        Journal(path, wanted).start(resume=True)
    message = str(error.value)
    assert "\n" not in message and message.endswith("remove it or pick another journal file")
    return message


def test_the_header_carries_kind_digests_settings_and_version():
    assert header() == {"kind": "robustness", "version": __version__,
                        "sha256": {"model": "a" * 64, "data": "d" * 64},
                        "settings": {"eps": 0.1, "search": {"timeout": 60.0}}}


def test_a_refusal_names_what_differs(tmp_path):
    assert "the model differs (sha256)" in refusal(tmp_path, header(), header(model="b" * 64))
    assert "setting search.timeout was 60.0, now 5.0" in refusal(tmp_path, header(), header(timeout=5.0))
    both = refusal(tmp_path, header(), header(model="b" * 64, timeout=5.0))
    assert both.index("model") < both.index("search.timeout")
    other_kind = {**header(), "kind": "certify", "settings": {"samples": 100, "eps": 0.1}}
    message = refusal(tmp_path, header(), other_kind)  # the kind alone: every setting differed too (2,000 chars)
    assert "it holds a robustness run, this is a certify run" in message and "setting" not in message


def test_another_version_is_refused(tmp_path):
    message = refusal(tmp_path, {**header(), "version": "0.0.1"}, header())
    assert f"certprune 0.0.1 wrote it, this is certprune {__version__}" in message


def test_a_journal_of_an_older_certprune_is_refused(tmp_path):
    legacy = {"model": "m.onnx", "property": "rob.yaml", "eps": 0.25}  # paths only: the stale-journal bug
    assert "an older certprune wrote it, without content digests" in refusal(tmp_path, legacy, header())


def test_per_instance_digests_name_the_instance(tmp_path):
    batch = journal_header("batch", {"model": ["a", "b", "c"]}, {})
    changed = journal_header("batch", {"model": ["a", "x", "c"]}, {})
    assert "the model of instance 2 differs" in refusal(tmp_path, batch, changed)


def test_file_digest_is_of_content_not_name(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.onnx").write_bytes(b"weights")
    (tmp_path / "n.onnx").write_bytes(b"weights")
    assert file_sha256(tmp_path / "a" / "m.onnx") == file_sha256(tmp_path / "n.onnx")
    (tmp_path / "n.onnx").write_bytes(b"weightz")
    assert file_sha256(tmp_path / "a" / "m.onnx") != file_sha256(tmp_path / "n.onnx")
    with pytest.raises(CertpruneError, match="cannot read model .*missing.onnx"):
        file_sha256(tmp_path / "missing.onnx", "model")


def test_content_digest_sees_values_dtypes_and_shapes():
    x = np.array([[2.0, 0.0]])
    base = content_sha256([(0, x, 0, x - 0.25, x + 0.25, None)])
    assert base == content_sha256([(0, x.copy(), 0, x - 0.25, x + 0.25, None)])
    assert base != content_sha256([(0, x + 1e-12, 0, x - 0.25, x + 0.25, None)])
    assert base != content_sha256([(0, x.astype(np.float32), 0, x - 0.25, x + 0.25, None)])
    assert base != content_sha256([(0, x.reshape(2, 1), 0, x - 0.25, x + 0.25, None)])
    assert base != content_sha256([(0, x, 0, x - 0.25, x + 0.25, 30.0)])
    assert base != content_sha256([(1, x, 0, x - 0.25, x + 0.25, None)])


def test_a_file_that_is_not_a_journal_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text("not json\n")
    with pytest.raises(CertpruneError, match="not a certprune journal"):
        Journal(path, {"eps": 0.02}).start(resume=True)
    results = tmp_path / "results.csv"  # a results table given as the journal, without --resume
    results.write_text("onnx,vnnlib,result\na.onnx,p.vnnlib,sat\n")
    with pytest.raises(CertpruneError, match="results.csv is not a certprune journal"):
        Journal(results, {"eps": 0.02}).start(resume=False)
    assert results.read_text().startswith("onnx,vnnlib")  # left as it was


def test_write_atomic_keeps_the_usual_permissions(tmp_path):
    import os
    import stat

    from certprune.journal import write_atomic

    write_atomic(tmp_path / "out.txt", "hello\n")
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "out.txt").stat().st_mode)
    assert (tmp_path / "out.txt").read_text() == "hello\n" and mode == 0o666 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_write_atomic_keeps_links_devices_and_pipes(tmp_path):
    """A symbolic link stays a link (its target gets the text), /dev/null stays a device, a FIFO a FIFO:
    renaming over them replaced /dev/null itself with a plain file when run as root."""
    import os
    import stat
    import threading

    from certprune.journal import write_atomic

    target = tmp_path / "target.json"
    target.write_text("old\n")
    (tmp_path / "link.json").symlink_to(target)
    write_atomic(tmp_path / "link.json", "new\n")
    assert (tmp_path / "link.json").is_symlink() and target.read_text() == "new\n"

    write_atomic("/dev/null", "nothing\n")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()))
    reader.start()
    write_atomic(pipe, "through\n")
    reader.join(timeout=10)
    assert stat.S_ISFIFO(os.stat(pipe).st_mode) and received == ["through\n"]


def test_outputs_may_be_devices_but_not_folders(tmp_path):
    import pytest

    from certprune.cli.params import check_writable
    from certprune.errors import CertpruneError

    check_writable("/dev/null", "--json")  # no temporary file is created in /dev, nothing is refused
    with pytest.raises(CertpruneError, match="is a folder"):
        check_writable(str(tmp_path), "--json")
