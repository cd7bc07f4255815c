"""Progress of long runs: a tqdm bar on a terminal, plain timestamped lines elsewhere (CI logs, files).

A tqdm bar redraws itself with carriage returns; written to a log that is not a terminal it becomes one
endless line. Off a terminal, ``progress_bar`` returns ``LogLines`` instead: the same calls, one line at
most every ``LOG_EVERY`` seconds (and a last one at the end) with counts, rate and an estimate of the rest.
"""
from __future__ import annotations

import sys
import time

LOG_EVERY = 30.0  # seconds between two progress lines in a log


def progress_bar(total: int, unit: str, desc: str | None = None, initial: int = 0, leave: bool = True,
                 stream=None, enabled: bool = True):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else ``LogLines`` writing to it (nothing
    written when not ``enabled``)."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return LogLines(total, unit, desc, initial, None)
    if _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, initial=initial, unit=unit, dynamic_ncols=True, leave=leave,
                    file=stream)
    return LogLines(total, unit, desc, initial, stream)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LogLines:
    """tqdm's ``update``/``set_postfix``/``set_postfix_str``/``close`` and ``n``, as occasional whole lines."""

    def __init__(self, total: int, unit: str, desc: str | None, initial: int, stream, every: float = LOG_EVERY,
                 clock=time.monotonic) -> None:
        self.total, self.unit, self.desc, self.n = total, unit, desc, initial
        self.stream, self.every, self.clock = stream, every, clock
        self.initial, self.postfix, self.shown = initial, "", None
        self.started = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.every:
            self._write()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        if self.n > self.initial and self.shown != (self.n, self.postfix):  # the end, unless just written
            self._write()

    def _write(self) -> None:
        if self.stream is None:
            return
        now = self.clock()
        self.last = now
        elapsed = now - self.started
        done = self.n - self.initial
        line = f"{self.desc}: " if self.desc else ""
        line += f"{self.n}/{self.total} {self.unit}s"
        if self.total:
            line += f" ({self.n / self.total:.0%})"
        line += f", {elapsed:.0f} s"
        if 0 < done and self.n < self.total:
            line += f", about {elapsed / done * (self.total - self.n):.0f} s left"
        if self.postfix:
            line += f"; {self.postfix}"
        print(line, file=self.stream, flush=True)
        self.shown = (self.n, self.postfix)


class ProgressBars:
    """One bar per named task (a gate's checks, a report's runs), each fed (done, total)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bars = enabled, {}

    def update(self, name: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        bar = self.bars.get(name)
        if bar is None:
            bar = self.bars[name] = progress_bar(total, "item", desc=name, leave=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
