"""Running a fairness property on a model: partitions over local processes, a journal, a report.

``verify_fairness`` decides every selected partition (in parallel with ``jobs > 1``: spawned processes, each
loading the model once), appends each result to a JSONL journal as it arrives (so an interrupted run loses
nothing and ``resume`` continues), shows a progress bar, and returns a FairnessReport; the JSON report and
the certificate are written when asked for.
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
from certprune.fairness.search import decide
from certprune.journal import Journal, file_sha256, journal_header
from certprune.onnx_io import load_onnx
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

    def run(self, index: int) -> dict:
        partition = self.partitions[index]
        started = time.perf_counter()
        deadline = started + (self.timeout if self.timeout is not None else float("inf"))
        outcome = decide(self.problem, self.referee, partition, deadline)
        return PartitionResult(index, outcome.verdict, outcome.method, time.perf_counter() - started,
                               partition.points, partition.ranges(self.prop.names), outcome.counterexample,
                               outcome.details).record()


_WORKER: _Worker | None = None  # one per spawned process, set by the pool's initializer


def _init_worker(*args) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = _Worker(*args)


def _work(index: int) -> dict:
    return _WORKER.run(index)


def _cluster_chunk(setup: tuple, indices: list[int]) -> list[dict]:
    """One Dask task: decide these partitions with the worker process's own _Worker (built once per question)."""
    torch.set_num_threads(1)
    worker = cached(setup, lambda recipe: _Worker(*recipe))
    return [worker.run(index) for index in indices]


def verify_fairness(onnx_path: str | Path, property_path: str | Path, *, jobs: int = 1,
                    journal_path: str | Path | None = None, resume: bool = False, progress: bool = True,
                    json_out: str | Path | None = None, certificate_out: str | Path | None = None,
                    engine: str | None = None, timeout: float | None = None, limit: int | None = None,
                    settings: FairnessSettings | None = None, deadline: float | None = None,
                    cluster: str | None = None) -> FairnessReport:
    """Decide the fairness property at ``property_path`` on the ONNX model, partition by partition.

    ``engine`` and ``timeout`` (seconds per partition) override the property file's; ``limit`` runs only
    that many partitions, evenly spread over the domain (a quick look). ``settings`` tunes the engines.
    ``deadline`` (a ``time.perf_counter`` value) stops new partitions, as the property's total timeout does.
    ``cluster`` (``local:N`` or a Dask scheduler address) runs the partitions on Dask instead of ``jobs``
    local processes, with the same journal, counts and certificate (``certprune.cluster``).
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
    journal, done = _open_journal(journal_path, header, resume)
    todo = [i for i in selection if i not in done]
    total = started + prop.timeout_total if prop.timeout_total else float("inf")
    deadline = min(total, deadline if deadline is not None else float("inf"))
    records = dict(done)
    bar = _progress(progress, len(selection), len(done), records)
    try:
        for record in _results(worker, todo, jobs, deadline, (onnx_path, text, property_path, settings,
                                                              per_partition), cluster):
            records[record["partition"]] = record
            if journal:
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


def _open_journal(path, header: dict, resume: bool) -> tuple[Journal | None, dict[int, dict]]:
    """The journal (None without a path) and, when resuming, the partitions it already holds."""
    if not path:
        return None, {}
    journal = Journal(path, header)
    return journal, {int(r["partition"]): r for r in journal.start(resume) if "partition" in r}


def _select(count: int, limit: int | None) -> list[int]:
    if limit is None or limit >= count:
        return list(range(count))
    if limit <= 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    return sorted(set(np.linspace(0, count - 1, limit).round().astype(int).tolist()))


def _results(worker: _Worker, todo: list[int], jobs: int, deadline: float, init: tuple,
             cluster: str | None = None) -> Iterator[dict]:
    """Records as partitions finish: on a Dask cluster, in this process for one job, else in spawned
    worker processes."""
    if cluster and todo:
        with connect(cluster) as client:
            yield from run_chunks(client, _cluster_chunk, init, todo, deadline)
        return
    if jobs <= 1 or len(todo) <= 1:
        for index in todo:
            if time.perf_counter() > deadline:
                return
            yield worker.run(index)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                             initargs=init) as pool:
        pending = set()
        queue = iter(todo)
        try:
            while True:
                while len(pending) < 2 * jobs and time.perf_counter() <= deadline:
                    index = next(queue, None)
                    if index is None:
                        break
                    pending.add(pool.submit(_work, index))
                if not pending:
                    return
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


class _progress:
    """A tqdm bar counting partitions, with certified / falsified / undecided counts."""

    def __init__(self, enabled: bool, total: int, initial: int, records: dict) -> None:
        self.bar = None
        self.counts = {"verified": 0, "falsified": 0}
        self.seen = 0
        for record in records.values():
            self.count(record)
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="partition", dynamic_ncols=True)
            self.show()

    def count(self, record: dict) -> None:
        self.seen += 1
        if record["verdict"] in self.counts:
            self.counts[record["verdict"]] += 1

    def update(self, record: dict) -> None:
        self.count(record)
        if self.bar is not None:
            self.show()
            self.bar.update(1)

    def show(self) -> None:
        undecided = self.seen - sum(self.counts.values())
        self.bar.set_postfix(certified=self.counts["verified"], falsified=self.counts["falsified"],
                             undecided=undecided, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
