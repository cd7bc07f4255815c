"""Running one gate check on one model: certified accuracy, a fairness or VNN-LIB property, or model facts.

Each runner returns a ``Run``: the figures the requirements are judged on (the JSON contract of
``certprune.gate.run``), the counterexamples it replayed, and whether it ran to the end (a run cut short by
the gate's budget reports what it finished, with the rest undecided, and is not cached). A check is first
``describe``d: the sha256 digests and settings its cache key needs, computed without loading the model or
torch, so a gate served from the cache starts in a fraction of a second; the checks the cache does not hold
are then ``prepare``d on the loaded model (inputs validated, so a bad file is reported before anything runs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from certprune.journal import Journal, file_sha256, journal_header
from certprune.spec.policy import Check

if TYPE_CHECKING:
    from certprune.network import Network

Progress = Callable[[str, int, int], None]  # (check name, done, total)


@dataclass
class Run:
    figures: dict
    counterexamples: list = field(default_factory=list)
    complete: bool = True
    settings: dict = field(default_factory=dict)


@dataclass
class Prepared:
    """A check made ready for one model: what its result depends on (``digests``, ``settings``: cheap to
    compute, no model loaded) and, once ``prepare``d, the work to do."""

    check: Check
    digests: dict
    settings: dict
    work: Callable[[float, Journal | None, Progress | None], Run] | None = None

    def key_header(self, model_sha: str) -> dict:
        return journal_header(f"gate-{self.check.kind}", {"model": model_sha, **self.digests}, self.settings)


def describe(check: Check) -> Prepared:
    """The check's cache-key inputs: the sha256 of its property or data file and its settings."""
    from certprune.data import DATA_SETS

    data = {"data": _data_digest(check.data) if check.data else None}
    # a file counts by its content (the digest), not its path: a moved data file still hits the cache
    source = check.data if check.data is None or check.data in DATA_SETS else "file"
    table = {"data": source, "label": check.label, "features": check.features}
    if check.kind == "certify":
        return Prepared(check, data, {**table, "eps": list(check.eps), "samples": check.samples,
                                      "timeout": check.timeout})
    if check.kind == "facts":
        return Prepared(check, data, {**table, "samples": check.samples, "parity": check.parity})
    settings = {"timeout": check.timeout, "jobs": check.jobs} if check.kind == "fairness" else \
        {"timeout": check.timeout or 60.0}
    return Prepared(check, {"property": file_sha256(check.property, "property")}, settings)


def _data_digest(name: str) -> str | list[str]:
    """The sha256 of a built-in data set's file, or of the user's file (and its .domain.json sidecar)."""
    from certprune.data import DATA_SETS, data_file

    if name in DATA_SETS:
        return file_sha256(data_file(name), "data")
    path = Path(name)
    sidecar = path.with_name(f"{path.stem}.domain.json")
    return [file_sha256(path, "data")] + ([file_sha256(sidecar, "data")] if sidecar.is_file() else [])


def prepare(described: Prepared, network: Network, model_path: Path, cluster: str | None = None) -> Prepared:
    """Validate the check against the loaded model (a bad property or data shape is an error now, before
    anything runs) and attach its work; ``cluster`` is used by the checks that run many items."""
    makers = {"certify": _certify, "fairness": _fairness, "vnnlib": _vnnlib, "facts": _facts}
    return replace(described, work=makers[described.check.kind](described.check, network, model_path, cluster))


# ---- certified accuracy ----------------------------------------------------------------------------

def _certify(check: Check, network: Network, model_path: Path, cluster: str | None = None):
    from certprune.bab.certify import check_certifiable, samples_from_data

    check_certifiable(network)
    per_eps = {f"{eps:g}": samples_from_data(network, str(model_path),
                                             _load(check, eps).take(check.samples), check.timeout)
               for eps in check.eps}

    def work(deadline: float, journal: Journal | None, progress: Progress | None) -> Run:
        return _run_certify(check, network, model_path, per_eps, deadline, journal, progress, cluster)

    return work


def _run_certify(check, network, model_path, per_eps, deadline, journal, progress, cluster) -> Run:
    from certprune.bab.certify import certify, samples_sha256
    from certprune.bab.search import SearchSettings

    figures = {"data": check.data, "samples": check.samples, "per_eps": {}}
    examples, complete, done, total = [], True, 0, sum(len(s) for s in per_eps.values())
    for key, samples in per_eps.items():
        eps_journal = None if journal is None else \
            Journal(f"{journal.path}.eps{key}", {**journal.header, "eps": key, "samples": samples_sha256(samples)})

        def tick(record, key=key):
            nonlocal done
            done += 1
            if progress:
                progress(check.name, done, total)

        report = certify(network, str(model_path), samples, SearchSettings(timeout=check.timeout),
                         journal=eps_journal, resume=True, on_record=tick, cluster=cluster, deadline=deadline)
        figures["per_eps"][key] = _certify_figures(float(key), report.records, len(samples))
        complete &= len(report.records) == len(samples)
        examples += [_sample_example(r, key) for r in report.records if r.get("counterexample_x") is not None]
    return Run(figures, examples, complete)


def _certify_figures(eps: float, records: list[dict], total: int) -> dict:
    counts = {s: sum(1 for r in records if r["status"] == s)
              for s in ("verified", "falsified", "unknown", "timeout", "misclassified")}
    undecided = counts["unknown"] + counts["timeout"] + (total - len(records))
    n = max(total, 1)
    return {"eps": eps, "samples": total, **counts, "not_run": total - len(records), "undecided": undecided,
            "certified_accuracy": counts["verified"] / n, "falsified_share": counts["falsified"] / n,
            "undecided_share": undecided / n, "seconds": sum(r["seconds"] for r in records),
            "records": [{k: r.get(k) for k in ("index", "status", "seconds", "unstable", "crown_verified")}
                        for r in records]}


def _sample_example(record: dict, eps: str) -> dict:
    return {"label": f"sample {record['index']} at eps {eps} (label {record['label']})",
            "x": record["counterexample_x"], "outputs": record.get("counterexample_logits"), "file": None}


# ---- properties ------------------------------------------------------------------------------------

def _fairness(check: Check, network: Network, model_path: Path, cluster: str | None = None):
    from certprune.fairness.problem import FairnessProblem, FairnessSettings
    from certprune.spec.fairness import parse_fairness
    from certprune.spec.text import read_text

    prop = parse_fairness(read_text(check.property), str(check.property))
    settings_value = FairnessSettings(engine=prop.engine)
    FairnessProblem.create(network, prop, settings_value, str(model_path))  # does the property fit the model?

    def work(deadline: float, journal: Journal | None, progress: Progress | None) -> Run:
        from certprune.fairness.verify import verify_fairness

        report = verify_fairness(model_path, check.property, jobs=check.jobs, progress=False, timeout=check.timeout,
                                 journal_path=None if journal is None else journal.path, resume=True,
                                 deadline=deadline, cluster=cluster)
        return _fairness_run(report)

    return work


def _fairness_run(report) -> Run:
    counts = report.counts()
    undecided = counts["unknown"]["share"] + counts["timeout"]["share"] + counts["not run"]["share"]
    falsified = counts["falsified"]["partitions"] > 0
    holds = False if falsified else True if counts["certified"]["share"] >= 1.0 and not undecided else None
    figures = {"partitions": report.total_partitions, "certified": counts["certified"]["partitions"],
               "falsified": counts["falsified"]["partitions"],
               "unknown": report.total_partitions - counts["certified"]["partitions"] - counts["falsified"]["partitions"],
               "certified_share": counts["certified"]["share"], "falsified_share": counts["falsified"]["share"],
               "undecided_share": undecided, "holds": holds}
    examples = []
    for p in report.partitions:
        if p.counterexample is not None and len(examples) < 20:
            c = p.counterexample
            names = list(c["x"])
            examples.append({"label": f"partition {p.index}", "names": names, "x": [c["x"][n] for n in names],
                             "x_prime": [c["x_prime"][n] for n in names], "outputs": c["outputs"][0],
                             "outputs_prime": c["outputs"][1], "decisions": c["decisions"], "file": None})
    return Run(figures, examples, counts["not run"]["partitions"] == 0)


def _vnnlib(check: Check, network: Network, model_path: Path, cluster: str | None = None):
    from certprune.bab.instances import vnnlib_instances
    from certprune.spec.vnnlib import read_vnnlib

    instances = vnnlib_instances(network, read_vnnlib(check.property))  # does the property fit the model?
    timeout = check.timeout or 60.0

    def work(deadline: float, journal: Journal | None, progress: Progress | None) -> Run:
        from certprune.bab.instances import verify_instances
        from certprune.bab.search import SearchSettings
        from certprune.runtime import OnnxRuntimeModel

        budget = min(timeout, deadline - time.perf_counter())
        if budget <= 0:
            return Run({"verdict": "timeout", "holds": None}, complete=False)
        result = verify_instances(network, model_path, instances, SearchSettings(timeout=budget))
        verdict = result.verdict.value
        holds = {"verified": True, "falsified": False}.get(verdict)
        examples = []
        if result.counterexample is not None:
            x = np.asarray(result.counterexample.inputs, dtype=np.float32)
            y = OnnxRuntimeModel(model_path)(x.reshape(1, *network.input_shape))[0]
            examples.append({"label": check.property.name, "x": x.tolist(), "outputs": np.ravel(y).tolist(),
                             "file": None})
        return Run({"verdict": verdict, "holds": holds}, examples, complete=budget >= timeout)

    return work


# ---- model facts -----------------------------------------------------------------------------------

def _facts(check: Check, network: Network, model_path: Path, cluster: str | None = None):
    def work(deadline: float, journal: Journal | None, progress: Progress | None) -> Run:
        return Run(_facts_figures(check, network, model_path))

    return work


def _facts_figures(check: Check, network: Network, model_path: Path) -> dict:
    from certprune.parity import check_parity
    from certprune.prune.metrics import flops, parameter_count

    figures = {"parameters": parameter_count(network), "parameters_total": parameter_count(network, nonzero=False),
               "flops": flops(network), "clean_accuracy": None, "parity": None, "parity_relative_diff": None}
    if check.data is not None:
        figures["clean_accuracy"] = clean_accuracy(network, model_path, check)
    if check.parity:
        report = check_parity(network, model_path)
        figures["parity"], figures["parity_relative_diff"] = bool(report.ok), float(report.relative)
    return figures


def clean_accuracy(network: Network, model_path: Path, check: Check) -> float:
    """Accuracy of the ONNX model itself (onnxruntime, the model's decision rule) on the first test samples."""
    from certprune.runtime import OnnxRuntimeModel
    from certprune.spec.robustness import decision

    data = _load(check, 0.0).take(check.samples)
    x = data.x.numpy().astype(np.float32).reshape(len(data), *network.input_shape)
    outputs = OnnxRuntimeModel(model_path)(x).reshape(len(data), -1)
    predicted = np.array([decision(row) for row in outputs])
    return float((predicted == data.y.numpy()).mean())


def _load(check: Check, eps: float):
    """The check's test samples: a built-in split, or the user's file (its test split where it has one)."""
    from certprune.datafile import is_data_file
    from certprune.prune import load_data

    options = {"label": check.label, "features": check.features} if is_data_file(check.data) else {}
    return load_data(check.data, "test", eps, **options)


def with_eps(check: Check):
    """A certify check's requirements with an eps each (a rule without one applies at every eps)."""
    for requirement in check.requirements:
        if check.kind == "certify" and requirement.eps is None:
            yield from (replace(requirement, eps=eps) for eps in check.eps)
        else:
            yield requirement
