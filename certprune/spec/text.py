"""Reading a property or instances file as text: a missing file or a binary one is a one-line PropertyError."""
from __future__ import annotations

from pathlib import Path

from certprune.errors import PropertyError


def read_text(path: str | Path, what: str = "property file") -> str:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PropertyError(f"cannot read {what} {path}: {error.strerror}") from error
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (Excel, Notepad) is not part of the text
    except UnicodeDecodeError as error:
        raise PropertyError(f"{path}: not a text file (invalid UTF-8 at byte {error.start})") from error
