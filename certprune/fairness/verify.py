"""Running a fairness property on a model: partitions over local processes, a journal, a report.

``verify_fairness`` decides every selected partition (in parallel with ``jobs > 1``: spawned processes, each
loading the model once), in rounds of growing per-partition caps (``schedule.py``: easy first, then the hard
ones interleaved with what is left), appends each result to a JSONL journal as it arrives (so an interrupted
run loses nothing and ``resume`` continues; a partition retried in a later round appends its new record, and
the last record of a partition is its result), shows a progress bar, and returns a FairnessReport; the JSON
report and the certificate are written when asked for.
"""
from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from certprune.cluster import cached, connect, run_chunks
from certprune.fairness.partition import Partitioning
from certprune.fairness.problem import FairnessProblem, FairnessSettings
from certprune.fairness.replay import Referee
from certprune.fairness.report import FairnessReport, PartitionResult, format_summary
from certprune.fairness.schedule import Schedule
from certprune.fairness.search import decide
from certprune.journal import HeldJournal, Journal, file_sha256, journal_header, keep_on_interrupt
from certprune.onnx_io import load_onnx
from certprune.signals import sigint_ignored_for_children
from certprune.spec.fairness import parse_fairness
from certprune.spec.text import read_text

__all__ = ["verify_fairness", "format_summary", "FairnessSettings"]


class _Worker:
    """Everything one process needs to decide partitions of one question."""

    def __init__(self, onnx_path: str, property_text: str, property_source: str, settings: FairnessSettings,
                 timeout: float | None) -> None:
        self.prop = parse_fairness(property_text, property_source)
        self.problem = FairnessProblem.create(load_onnx(onnx_path), self.prop, settings, onnx_path)
        self.referee = Referee(self.problem)
        self.partitions = Partitioning(self.prop)
        self.timeout = timeout

    def run(self, index: int, budget: float | None = None) -> dict:
        """Decide partition ``index`` within ``budget`` seconds (default: the per-partition timeout)."""
        partition = self.partitions[index]
        started = time.perf_counter()
        budget = self.timeout if budget is None else budget
        deadline = started + (budget if budget is not None else float("inf"))
        outcome = decide(self.problem, self.referee, partition, deadline)
        return PartitionResult(index, outcome.verdict, outcome.method, time.perf_counter() - started,
                               partition.points, partition.ranges(self.prop.names), outcome.counterexample,
                               outcome.details).record()


_WORKER: _Worker | None = None  # one per spawned process, set by the pool's initializer


def _init_worker(*args) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = _Worker(*args)


def _work(item: tuple[int, float]) -> dict:
    return _WORKER.run(*item)


def _cluster_chunk(setup: tuple, items: list) -> list[dict]:
    """One Dask task: decide these (partition, budget) items with the worker process's own _Worker (built once
    per question)."""
    torch.set_num_threads(1)
    worker = cached(setup, lambda recipe: _Worker(*recipe))
    return [worker.run(*item) for item in items]


def verify_fairness(onnx_path: str | Path, property_path: str | Path, *, jobs: int = 1,
                    journal_path: str | Path | None = None, resume: bool = False, progress: bool = True,
                    json_out: str | Path | None = None, certificate_out: str | Path | None = None,
                    engine: str | None = None, timeout: float | None = None, limit: int | None = None,
                    settings: FairnessSettings | None = None, deadline: float | None = None,
                    cluster: str | None = None, hold_on_interrupt: bool = False) -> FairnessReport:
    """Decide the fairness property at ``property_path`` on the ONNX model, partition by partition.

    ``engine`` and ``timeout`` (seconds per partition) override the property file's; ``limit`` runs only
    that many partitions, evenly spread over the domain (a quick look). ``settings`` tunes the engines.
    ``deadline`` (a ``time.perf_counter`` value) stops new partitions, as the property's total timeout does.
    ``cluster`` (``local:N`` or a Dask scheduler address) runs the partitions on Dask instead of ``jobs``
    local processes, with the same journal, counts and certificate (``certprune.cluster``).
    ``hold_on_interrupt`` (the CLI's ``verify``): without a journal path, Ctrl-C writes the finished partitions
    to a journal file in the current folder (``certprune.journal.keep_on_interrupt``).
    """
    started = time.perf_counter()
    onnx_path, property_path = str(onnx_path), str(property_path)
    text = read_text(property_path)
    prop = parse_fairness(text, property_path)
    settings = replace(settings, engine=engine) if settings and engine else \
        settings or FairnessSettings(engine=engine or prop.engine)
    per_partition = timeout if timeout is not None else prop.timeout_partition
    worker = _Worker(onnx_path, text, property_path, settings, per_partition)  # validates model and property
    partitions = worker.partitions
    selection = _select(len(partitions), limit)
    model_sha = file_sha256(onnx_path, "model")
    header = journal_header("fairness", {"model": model_sha, "property": prop.sha256},
                            {**settings.as_dict(), "timeout": per_partition, "limit": limit})
    journal, done = _open_journal(journal_path, header, resume, hold_on_interrupt)
    records = dict(done)
    decided = {i for i, r in done.items() if r["verdict"] in _DECIDED}
    todo = [i for i in selection if i not in decided]  # journaled undecided ones are retried, as in a later round
    total = started + prop.timeout_total if prop.timeout_total else float("inf")
    deadline = min(total, deadline if deadline is not None else float("inf"))
    bar = _progress(progress, len(selection), len(decided), records)
    init = (onnx_path, text, property_path, settings, per_partition)
    try:
        runner = _Runner(worker, jobs if todo else 1, init, cluster if todo else None)
        with keep_on_interrupt(journal), runner:
            for record in _rounds(runner, Schedule(per_partition=per_partition), todo, partitions, records,
                                  deadline):
                if journal is not None:
                    journal.append(record)
                bar.update(record)
    finally:
        bar.close()
    chosen = set(selection)
    results = tuple(PartitionResult.from_record(records[i]) for i in sorted(records) if i in chosen)
    report = FairnessReport(onnx_path, model_sha, property_path, prop.sha256, settings.engine, settings.as_dict(),
                            len(partitions), len(selection), partitions.total_points, results,
                            time.perf_counter() - started)
    if json_out:
        Path(json_out).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if certificate_out:
        Path(certificate_out).write_text(json.dumps(report.certificate(), indent=2) + "\n")
    return report


def _open_journal(path, header: dict, resume: bool, hold: bool) -> tuple[Journal | HeldJournal | None, dict]:
    """The journal (without a path: held in memory until Ctrl-C, or none) and, when resuming, the partitions
    it already holds."""
    if not path:
        return HeldJournal(header) if hold else None, {}
    journal = Journal(path, header)
    return journal, {int(r["partition"]): r for r in journal.start(resume) if "partition" in r}


def _select(count: int, limit: int | None) -> list[int]:
    if limit is None or limit >= count:
        return list(range(count))
    if limit <= 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    return sorted(set(np.linspace(0, count - 1, limit).round().astype(int).tolist()))


_DECIDED = ("verified", "falsified")


def _rounds(runner: "_Runner", schedule: Schedule, todo: list[int], partitions: Partitioning, records: dict,
            deadline: float) -> Iterator[dict]:
    """Records as partitions finish, round by round (``schedule.py``); ``records`` keeps each partition's last
    record, its seconds and tries summed over the rounds it ran in."""
    pending = schedule.first_order(todo, {i: partitions[i].points for i in todo})
    for cap in schedule.caps():
        retry = []
        for record in runner.run([(i, cap) for i in pending], deadline):
            record = _merge(records.get(record["partition"]), record, cap)
            records[record["partition"]] = record
            if record["verdict"] not in _DECIDED:
                retry.append(record["partition"])
            yield record
        again = set(retry)
        pending = [i for i in pending if i in again]
        if not pending or time.perf_counter() > deadline:
            return


def _merge(previous: dict | None, record: dict, cap: float) -> dict:
    """The new record of a partition, with the seconds and budgets of its earlier tries added."""
    tries = list((previous or {}).get("details", {}).get("tries", []))
    if previous is not None and not tries:
        tries = [{"budget": None, "verdict": previous["verdict"], "seconds": previous["seconds"]}]
    tries.append({"budget": None if cap == float("inf") else cap, "verdict": record["verdict"],
                  "seconds": record["seconds"]})
    seconds = round(sum(t["seconds"] for t in tries), 4)
    return {**record, "seconds": seconds, "details": {**record["details"], "tries": tries}}


class _Runner:
    """Runs (partition, budget) items: on a Dask cluster, in this process for one job, else in spawned worker
    processes that live across rounds (each loads the model once)."""

    def __init__(self, worker: _Worker, jobs: int, init: tuple, cluster: str | None) -> None:
        self.worker, self.jobs, self.init, self.cluster = worker, jobs, init, cluster
        self.client = self.pool = None
        self._connection = None

    def __enter__(self) -> "_Runner":
        if self.cluster:
            self._connection = connect(self.cluster)
            self.client = self._connection.__enter__()
        elif self.jobs > 1:
            self.pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=self.init)
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self.pool is not None:
            if error is not None:  # Ctrl-C or a failure here: the workers ignore SIGINT, so end them now
                workers = list((getattr(self.pool, "_processes", None) or {}).values())
                for process in workers:
                    process.terminate()
                for process in workers:
                    process.join(timeout=5)
            self.pool.shutdown(wait=error is None, cancel_futures=error is not None)
        if self._connection is not None:
            self._connection.__exit__(kind, error, trace)

    def run(self, items: list[tuple[int, float]], deadline: float) -> Iterator[dict]:
        """Records as items finish; no new item starts after ``deadline``, and none runs past it."""
        items = [(i, min(cap, max(0.0, deadline - time.perf_counter()))) for i, cap in items]
        if self.client is not None and items:
            yield from run_chunks(self.client, _cluster_chunk, self.init, items, deadline)
        elif self.pool is None or len(items) <= 1:
            for index, cap in items:
                if time.perf_counter() > deadline:
                    return
                yield self.worker.run(index, min(cap, deadline - time.perf_counter()))
        else:
            yield from self._parallel(items, deadline)

    def _parallel(self, items: list[tuple[int, float]], deadline: float) -> Iterator[dict]:
        pending = set()
        queue = iter(items)
        while True:
            # no more items than workers: an item waiting in the pool's queue would start later than its budget
            # (computed here) assumes and could run past the total deadline
            while len(pending) < self.jobs and time.perf_counter() <= deadline:
                item = next(queue, None)
                if item is None:
                    break
                pending.add(self._submit((item[0], min(item[1], deadline - time.perf_counter()))))
            if not pending:
                return
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()


    def _submit(self, item: tuple[int, float]):
        """Submit so that a worker the pool spawns now ignores SIGINT: Ctrl-C interrupts this process alone,
        and ``__exit__`` ends the workers."""
        with sigint_ignored_for_children():
            return self.pool.submit(_work, item)


class _progress:
    """A progress bar counting partitions tried, with certified / falsified / undecided counts (a partition retried
    in a later round counts once, with its last verdict)."""

    def __init__(self, enabled: bool, total: int, initial: int, records: dict) -> None:
        self.bar = None
        self.verdicts = {i: r["verdict"] for i, r in records.items()}
        if enabled:
            from certprune.progress import progress_bar

            self.bar = progress_bar(total, "partition", initial=len(self.verdicts))
            self.show()

    def update(self, record: dict) -> None:
        new = record["partition"] not in self.verdicts
        self.verdicts[record["partition"]] = record["verdict"]
        if self.bar is not None:
            self.show()
            self.bar.update(1 if new else 0)

    def show(self) -> None:
        values = list(self.verdicts.values())
        certified, falsified = values.count("verified"), values.count("falsified")
        self.bar.set_postfix(certified=certified, falsified=falsified,
                             undecided=len(values) - certified - falsified, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
