"""Append-only JSONL journals keyed by content: a run resumes only a journal of the very same question."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from certprune.errors import CertpruneError
from certprune.version import __version__

_ABSENT = object()
_GROUPS = ("kind", "sha256", "settings", "version")  # the order in which differences are named


def file_sha256(path: str | Path, what: str = "file") -> str:
    """The sha256 of a file's bytes: its content, whatever its name or folder."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise CertpruneError(f"cannot read {what} {path}: {error.strerror}") from None
    return digest.hexdigest()


def content_sha256(value: Any) -> str:
    """The sha256 of nested lists and tuples of arrays (values, dtype, shape), numbers, strings and None."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, (np.ndarray, np.generic)):
        array = np.ascontiguousarray(value)
        assert array.dtype != object, "object arrays have no content to hash"
        digest.update(f"a{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    else:
        text = json.dumps(value)  # repr of a float round-trips, so equal text means equal value
        digest.update(f"v{len(text)}:{text}".encode())


def journal_header(kind: str, digests: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a journal is keyed by: the kind of run, the sha256 of each input (``model``, ``property``, ``data``;
    content only, never paths, so a moved folder still resumes), the settings and the certprune version."""
    return {"kind": kind, "version": __version__, "sha256": dict(digests), "settings": dict(settings)}


class Journal:
    """One JSON object per line, flushed and fsynced as each item finishes.

    A header line (``{"journal": header}``, see ``journal_header``) ties the journal to one question;
    resuming a journal written for another model, property, data, settings or version is refused with a
    message naming what differs, rather than silently reusing verdicts of another question.
    """

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.header = json.loads(json.dumps(header, default=_jsonable))  # as it reads back from the file

    def records(self) -> list[dict[str, Any]]:
        """The finished items already in the journal (empty if it does not exist)."""
        if not self.path.exists():
            return []
        lines = list(self._lines())
        if not lines:
            return []
        head, *rest = lines
        written = head.get("journal") if isinstance(head, dict) else None
        if not isinstance(written, dict):
            raise CertpruneError(f"journal {self.path} is not a certprune journal (line 1)")
        if written != self.header:
            raise CertpruneError(f"journal {self.path} does not fit this run: {mismatch(written, self.header)}; "
                                 "remove it or pick another journal file")
        return rest

    def start(self, resume: bool) -> list[dict[str, Any]]:
        """Open for appending; with ``resume`` return what is already done, else start afresh. Starting afresh
        over a journal that holds finished results is refused: they are work a mistyped path would lose."""
        if resume:
            self._drop_torn_tail()
        elif self.path.is_file():
            self._check_head()  # another kind of file (a results CSV given as the journal) is named as such
            with self.path.open("rb") as f:
                finished = sum(1 for line in f if line.strip()) - 1
            if finished > 0:
                raise CertpruneError(f"journal {self.path} already holds {finished} finished result(s): pass "
                                     "--resume to continue it, or remove it to start afresh")
        done = self.records() if resume else []
        if not resume or not self.path.exists() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w") as f:
                f.write(json.dumps({"journal": self.header}) + "\n")
        return done

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _check_head(self) -> None:
        """Refuse a non-empty file whose first line is not a journal header."""
        with self.path.open("rb") as f:
            first = next((line for line in f if line.strip()), None)
        if first is None:
            return
        try:
            head = json.loads(first)
        except (json.JSONDecodeError, UnicodeDecodeError):
            head = None
        if not isinstance(head, dict) or not isinstance(head.get("journal"), dict):
            raise CertpruneError(f"{self.path} is not a certprune journal (line 1); pick another journal file")

    def _drop_torn_tail(self) -> None:
        """Cut a last line that a crash left unfinished, so that records appended now start on a line of
        their own (every complete record ends in a newline)."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def _lines(self) -> Iterator[dict[str, Any]]:
        with self.path.open() as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    # A crash can cut the last line short; everything before it stays valid.
                    if number > 1:
                        return
                    raise CertpruneError(f"journal {self.path} is not a certprune journal (line 1)")


def mismatch(written: dict[str, Any], wanted: dict[str, Any]) -> str:
    """What differs between the header a journal was written with and this run's, in words."""
    if "version" in wanted and "version" not in written:
        return "an older certprune wrote it, without content digests"
    if written.get("kind") != wanted.get("kind"):  # the one difference that matters: the rest follows from it
        return f"it holds a {written.get('kind')} run, this is a {wanted.get('kind')} run"
    old, new = _flatten(written), _flatten(wanted)
    keys = list(new) + [k for k in old if k not in new]
    changed = [k for k in keys if old.get(k, _ABSENT) != new.get(k, _ABSENT)]
    changed.sort(key=lambda k: _GROUPS.index(k.split(".")[0]) if k.split(".")[0] in _GROUPS else len(_GROUPS))
    return ", ".join(_difference(k, old.get(k, _ABSENT), new.get(k, _ABSENT)) for k in changed)


def _flatten(header: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in header.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _difference(key: str, old: Any, new: Any) -> str:
    group, _, name = key.partition(".")
    if key == "kind":
        return f"it holds a {old} run, this is a {new} run"
    if key == "version":
        return f"certprune {old} wrote it, this is certprune {new}"
    if group == "sha256":
        if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
            items = [str(i) for i, (a, b) in enumerate(zip(old, new), 1) if a != b]
            many = len(items) > 1
            return f"the {name} of instance{'s' * many} {', '.join(items)} differ{'s' * (not many)} (sha256)"
        return f"the {name} {'differ' if name.endswith('s') else 'differs'} (sha256)"
    if group == "settings":
        return f"setting {name} was {_show(old)}, now {_show(new)}"
    return f"{key} was {_show(old)}, now {_show(new)}"


def _show(value: Any) -> str:
    return "absent" if value is _ABSENT else json.dumps(value)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "value"):
        return value.value
    raise TypeError(f"cannot write {type(value).__name__} to a journal")


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write a whole file or nothing: a temporary file in the same folder, synced, then renamed over ``path``.

    A reader (a CI job, a resumed run) never sees half a file, even when the writer is killed mid-way. A
    symbolic link stays a link (its target is written); a device or a pipe (``/dev/null``, ``/dev/stdout``, a
    FIFO) is written in place, as renaming over it would replace the device itself with a plain file.
    ``text`` may be bytes (a binary file, e.g. a pruning checkpoint).
    """
    path = Path(path)
    mode = "wb" if isinstance(text, bytes) else "w"
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file() and not path.is_dir():
        try:
            with open(path, mode) as stream:
                stream.write(text)
        except OSError as error:
            raise CertpruneError(f"cannot write {path}: {error.strerror or error}") from error
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                         delete=False) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(f.name, 0o666 & ~umask)  # as a plain open() would create it, not the temporary file's 0600
        os.replace(f.name, path)
    except BaseException as error:  # Ctrl-C in the middle of a write too: no temporary file is left
        if "f" in locals() and os.path.exists(f.name):
            os.unlink(f.name)
        if isinstance(error, OSError):
            raise CertpruneError(f"cannot write {path}: {error.strerror or error}") from error
        raise


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, after the finished results were written to a journal file (``kept``, ``count`` of them)."""

    def __init__(self, kept: Path | None, count: int, failure: str | None = None) -> None:
        super().__init__()
        self.kept, self.count, self.failure = kept, count, failure


class HeldJournal:
    """The journal of a run that was given none: finished records are held in memory, and written to a journal
    file in the current folder only if the run is interrupted (``keep_on_interrupt``), so that Ctrl-C loses
    nothing that finished and the user can resume with ``--journal FILE --resume``. A run that ends normally
    leaves no file."""

    def __init__(self, header: dict[str, Any]) -> None:
        self.header = json.loads(json.dumps(header, default=_jsonable))
        self.held: list[dict[str, Any]] = []

    def start(self, resume: bool) -> list[dict[str, Any]]:
        return []

    def append(self, record: dict[str, Any]) -> None:
        self.held.append(json.loads(json.dumps(record, default=_jsonable)))

    def write(self, folder: Path = Path(".")) -> Path:
        """The held records as a journal file named after the run's kind and key, not over an existing file."""
        key = hashlib.sha256(json.dumps(self.header, sort_keys=True).encode()).hexdigest()[:8]
        path = folder / f"certprune-{self.header['kind']}-{key}.journal.jsonl"
        number = 1
        while path.exists():
            number += 1
            path = folder / f"certprune-{self.header['kind']}-{key}-{number}.journal.jsonl"
        lines = [json.dumps({"journal": self.header})] + [json.dumps(record) for record in self.held]
        write_atomic(path, "\n".join(lines) + "\n")
        return path


class keep_on_interrupt:
    """``with keep_on_interrupt(journal):`` on Ctrl-C, a ``HeldJournal``'s records are written to a file and the
    interrupt goes on as ``Interrupted`` naming it (a real journal already holds them: nothing to do)."""

    def __init__(self, journal: Any) -> None:
        self.journal = journal

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, trace) -> bool:
        if not isinstance(error, KeyboardInterrupt) or isinstance(error, Interrupted):
            return False
        if not isinstance(self.journal, HeldJournal) or not self.journal.held:
            return False
        count = len(self.journal.held)
        try:
            kept, failure = self.journal.write(), None
        except CertpruneError as problem:
            kept, failure = None, str(problem)
        raise Interrupted(kept, count, failure) from error
