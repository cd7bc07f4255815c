"""Options that refuse what no command can use: NaN anywhere, infinities where a size is meant, a range whose
ends are out of order (click's usage error), and an output file that cannot be written (one line); all exit 2
before any work, which a failed write at the end would lose."""
from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

import click

from certprune.errors import CertpruneError


class _Number(click.ParamType):
    name = "number"

    def __init__(self, infinite: bool, positive: bool = False) -> None:
        self.infinite = infinite  # inf allowed (a timeout without a limit), NaN never
        self.positive = positive  # only numbers above 0 (a timeout of 0 or less was a traceback, or ignored)

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if math.isnan(number) or (math.isinf(number) and not self.infinite):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.positive and not number > 0:
            self.fail(f"{value!r} is not a number of seconds above 0", param, ctx)
        return number


FINITE = _Number(infinite=False)  # radii, ranges, weights, shares
SECONDS = _Number(infinite=True, positive=True)  # timeouts: inf means none


def ordered_range(ctx, param, value):
    """A --range LO HI callback: LO < HI."""
    if value is not None and len(value) == 2 and not value[0] < value[1]:
        raise click.BadParameter(f"LO must be below HI, got {value[0]:g} {value[1]:g}", ctx=ctx, param=param)
    return value


def check_writable(path: str, what: str) -> None:
    """Refuse an output before any work: a folder, or a place where no file can be created (its missing
    folders are created when it is written)."""
    target = Path(path)
    if target.is_dir():
        raise CertpruneError(f"{what} {path} is a folder, not a file name")
    if target.exists() and not target.resolve().is_file():  # a device or a pipe: written in place
        if not os.access(target, os.W_OK):
            raise CertpruneError(f"cannot write {what} {path}: permission denied")
        return
    folder = target.resolve().parent if target.is_symlink() else target.absolute().parent
    while not folder.exists():
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):  # a real write: permission bits say nothing for root or /proc
            pass
    except OSError as error:
        raise CertpruneError(f"cannot write {what} {path}: {folder} is not a writable folder "
                             f"({error.strerror or error})") from None


class _OutputFile(click.ParamType):
    name = "file"

    def convert(self, value, param, ctx):
        check_writable(value, param.opts[-1] if param is not None else "output")  # one line, exit 2
        return value


OUTPUT = _OutputFile()  # a file a command writes (its missing folders are created then)


def threads_option(f):
    """--threads: torch's threads for the bounds (one by default: on a busy machine a second thread that waits
    for a core makes each of the many small tensor operations far slower; gate's pass.yaml: 87 s against 21)."""
    return click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                        help="Torch threads (more only pays on an idle machine).")(f)


def use_threads(threads: int) -> None:
    """Torch's intra-op threads, set through OMP_NUM_THREADS while torch is not loaded yet, so that a command
    that never needs it (a gate answered from its cache) does not load it."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
