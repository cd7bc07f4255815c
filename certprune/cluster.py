"""Independent work items on Dask distributed: chunks out, results streamed back as they finish.

``--cluster local:N`` starts a ``LocalCluster`` of N single-threaded worker processes on this machine;
``--cluster tcp://HOST:PORT`` joins a running scheduler (``dask scheduler`` and ``dask worker`` started
elsewhere, see the README). Items (fairness partitions, certify samples) go out in chunks sized for the
scheduler, not one task each. Guarantees, the same as a local run:

* a worker that dies (kill -9, a lost machine) loses nothing: Dask runs its chunks again elsewhere, and the
  caller keys results by item, so nothing is counted twice;
* a chunk that raises (a bug, not a lost worker) is reported as an error, once: tasks are not retried;
* a deadline stops new chunks, cancels the waiting ones, and whatever did not finish stays undecided.

A task is ``work(setup, chunk) -> list``: ``setup`` is the picklable recipe of the heavy state (a model path
and a property text, say) that each worker process builds once and keeps (``cached``).
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from certprune.errors import CertpruneError
from certprune.signals import sigint_ignored_for_children

_STATE: dict[Any, Any] = {}  # per worker process: setup -> built state


def cached(setup: Any, build: Callable[[Any], Any]) -> Any:
    """The state built from ``setup`` in this worker process (built on first use)."""
    if setup not in _STATE:
        _STATE.clear()  # one question at a time per worker: keep memory flat
        _STATE[setup] = build(setup)
    return _STATE[setup]


def check_spec(spec: str) -> str:
    """``spec`` if it reads as ``local:N`` or a scheduler address, else a one-line error (checked before work)."""
    if spec.startswith("local:"):
        _count(spec)
    elif not spec.startswith(("tcp://", "tls://", "ucx://")):
        raise CertpruneError(f"--cluster must be local:N or a scheduler address like tcp://host:8786, got {spec!r}")
    return spec


@contextmanager
def connect(spec: str) -> Iterator[Any]:
    """A ``distributed.Client`` for ``local:N`` or a scheduler address; a one-line error without the extra."""
    check_spec(spec)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise CertpruneError("--cluster needs Dask distributed: pip install 'certprune[dask]'") from None
    if spec.startswith("local:"):
        workers = _count(spec)
        # Ctrl-C: this process stops the cluster, no worker's traceback. Workers log only CRITICAL: a task's
        # error reaches the caller anyway, and at shutdown a worker may log a lost heartbeat with its traceback
        with sigint_ignored_for_children():
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.CRITICAL)
        with cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(spec, timeout=30)
    except OSError as error:
        raise CertpruneError(f"cannot reach the Dask scheduler at {spec}: {error}") from None
    with client:
        yield client


def chunk_size(items: int, workers: int) -> int:
    """About eight chunks per worker, at most 200 items each: enough to balance, few enough to schedule."""
    return max(1, min(200, math.ceil(items / max(1, 8 * workers))))


def run_chunks(client, work: Callable, setup: Any, items: Sequence, deadline: float = math.inf,
               size: int | None = None) -> Iterator[Any]:
    """Results of ``work(setup, chunk)`` one by one, as chunks finish, until every chunk is done or the
    deadline passes. A chunk that raised is re-raised as a CertpruneError naming it, after the others."""
    from distributed import as_completed

    workers = max(1, len(client.scheduler_info().get("workers", {})))
    size = size or chunk_size(len(items), workers)
    chunks = [list(items[i:i + size]) for i in range(0, len(items), size)]
    window = 4 * workers  # chunks in flight: new ones go out only while there is time
    pending = iter(chunks)
    futures = as_completed()
    failures = []
    for chunk in _take(pending, window):
        futures.add(client.submit(work, setup, chunk, pure=False, retries=0))
    for future in futures:
        if future.status == "error":
            failures.append(f"{type(future.exception()).__name__}: {future.exception()}")
        else:
            yield from future.result()
        if time.perf_counter() < deadline:
            for chunk in _take(pending, 1):
                futures.add(client.submit(work, setup, chunk, pure=False, retries=0))
        else:
            _cancel(client, futures)
            break
    if failures:
        raise CertpruneError(f"{len(failures)} task(s) failed on the cluster (not retried): {failures[0]}")


def _take(iterator, count: int) -> list:
    out = []
    for _ in range(count):
        item = next(iterator, None)
        if item is None:
            break
        out.append(item)
    return out


def _cancel(client, futures) -> None:
    waiting = [f for f in futures.futures] if hasattr(futures, "futures") else []
    if waiting:
        client.cancel(waiting)
    futures.clear()


def _count(spec: str) -> int:
    try:
        count = int(spec.split(":", 1)[1])
    except ValueError:
        count = 0
    if count < 1:
        raise CertpruneError(f"--cluster local:N needs a number of workers N >= 1, got {spec!r}")
    return count
