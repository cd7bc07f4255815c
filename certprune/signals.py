"""Worker processes that leave Ctrl-C to the command that started them.

The terminal sends SIGINT to every process of the foreground group, so without care each worker process (a
local pool, a Dask local cluster) raises its own KeyboardInterrupt and prints a traceback. A process started
with SIGINT ignored keeps it ignored (across exec, and Python does not install its handler over an ignored
signal); the command ends its workers itself.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def sigint_ignored_for_children() -> Iterator[None]:
    """Processes started inside this block ignore SIGINT. SIGINT is blocked in this thread meanwhile, so a
    Ctrl-C in that moment waits (Linux keeps a blocked signal pending even while ignored) and reaches this
    process once its handler is back; but if another thread runs (a Dask cluster's, a progress bar's), the
    kernel may hand the signal to it, where it is ignored and lost: press Ctrl-C again. Outside the main
    thread, or with a handler installed outside Python, nothing changes."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
