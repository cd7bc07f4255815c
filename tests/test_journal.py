"""The JSONL journal: resume returns what was done, a torn last line is cut, other settings are refused."""
from __future__ import annotations

import json

import pytest

from certprune.errors import CertpruneError
from certprune.journal import Journal


def test_resume_returns_finished_records(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"eps": 0.02})
    assert journal.start(resume=True) == []
    journal.append({"index": 0, "status": "verified"})
    journal.append({"index": 1, "status": "falsified"})
    assert [r["index"] for r in Journal(path, {"eps": 0.02}).start(resume=True)] == [0, 1]


def test_start_without_resume_starts_afresh(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"eps": 0.02})
    journal.start(resume=False)
    journal.append({"index": 0})
    assert Journal(path, {"eps": 0.02}).start(resume=False) == []
    assert len(path.read_text().splitlines()) == 1


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
    with pytest.raises(CertpruneError, match="other settings"):
        Journal(path, {"eps": 0.05}).start(resume=True)


def test_a_file_that_is_not_a_journal_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text("not json\n")
    with pytest.raises(CertpruneError, match="not a certprune journal"):
        Journal(path, {"eps": 0.02}).start(resume=True)
