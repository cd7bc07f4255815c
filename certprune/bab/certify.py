"""Certified accuracy over samples: per sample verified / falsified / unknown / misclassified."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from certprune.bab.instances import Instance, verify_one
from certprune.bab.search import SearchSettings, refuted, stack_constraints
from certprune.bounds import CROWN
from certprune.errors import CertpruneError, PropertyError
from certprune.floats import float32_box
from certprune.journal import Journal, content_sha256
from certprune.network import Network
from certprune.runtime import OnnxRuntimeModel
from certprune.spec.robustness import RobustnessInstance, decision, robustness_property
from certprune.types import clipped_ball

STATUSES = ("verified", "falsified", "unknown", "timeout", "misclassified")


@dataclass
class CertifyReport:
    """Per-sample records and their totals; ``crown_verified`` counts samples CROWN alone proved."""

    records: list[dict] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for record in self.records:
            counts[record["status"]] += 1
        counts["crown_verified"] = sum(1 for r in self.records if r.get("crown_verified"))
        counts["samples"] = len(self.records)
        return counts

    @property
    def seconds(self) -> float:
        return sum(r["seconds"] for r in self.records)


def check_certifiable(network: Network) -> None:
    """Refuse a model ending in a sigmoid or softmax: its decisions are taken on float32 outputs that can tie
    where the logits differ, and the proofs are about the logits."""
    if network.output_transform is not None:
        raise PropertyError(f"the model ends in a {network.output_transform}, whose float32 outputs can round to "
                            "equal values for different logits; export it without the final "
                            f"{network.output_transform.capitalize()} to certify its decisions")


def certify_one(network: Network, onnx_path: str | Path, sample: RobustnessInstance,
                settings: SearchSettings) -> dict:
    """Verify the L-inf ball of one sample; a misclassified centre needs no search.

    The centre's prediction comes from onnxruntime on the original file, so "misclassified" (a
    counterexample at the centre itself) is as replayed as any other counterexample.
    """
    check_certifiable(network)
    started = time.perf_counter()
    n_classes = int(np.prod(network.output_shape))
    centre = np.asarray(sample.x, dtype=np.float32).reshape(1, *network.input_shape)
    logits = OnnxRuntimeModel(onnx_path)(centre).ravel()
    predicted = decision(logits)
    record = {"index": sample.index, "label": sample.label, "predicted": predicted}
    if predicted != sample.label:
        return {**record, "status": "misclassified", "seconds": time.perf_counter() - started}
    disjunct = robustness_property(sample.lower, sample.upper, sample.label, n_classes).disjuncts[0]
    record.update(_crown_view(network, disjunct))
    instance = Instance(f"sample{sample.index}", disjunct.lower, disjunct.upper, disjunct.constraints, sample.label)
    result = verify_one(network, onnx_path, instance, settings)
    record.update(status=result.verdict.value, decided_by=result.settings.get("decided_by", ""),
                  seconds=time.perf_counter() - started)
    if result.counterexample is not None:
        record["counterexample_logits"] = np.asarray(result.counterexample.outputs).tolist()
        record["counterexample_x"] = np.asarray(result.counterexample.inputs).tolist()
    return record


def _crown_view(network: Network, disjunct) -> dict:
    """Whether CROWN alone proves the ball, and the unstable ReLUs it leaves per layer."""
    C, rhs, groups = stack_constraints(disjunct.constraints)
    lo, hi = float32_box(disjunct.lower, disjunct.upper, outward=True)  # cover every real point of the ball
    lower = torch.as_tensor(lo).reshape(1, *network.input_shape)
    upper = torch.as_tensor(hi).reshape(1, *network.input_shape)
    bounds = CROWN().compute(network, lower, upper, C=C)
    unstable = [int(bounds.unstable(i).sum()) for i in range(len(bounds.pre_lower))]
    return {"crown_verified": bool(refuted(bounds.output_lower, rhs, groups)[0]), "unstable": unstable}


def samples_from_data(network: Network, source: str, data, timeout: float) -> list[RobustnessInstance]:
    """One L-inf box per sample of ``data`` (a PruneData: float64 corners clipped to the data's domain), in the
    model's input shape; ``source`` names the model in the error when the shapes differ."""
    shape = network.input_shape
    if data.x[0].numel() != int(np.prod(shape)):
        raise PropertyError(f"{source}: takes inputs of shape {shape}, the data has {data.x[0].numel()} values "
                            "per sample")
    n_classes = int(np.prod(network.output_shape))
    classes = 2 if n_classes == 1 else n_classes
    labels = np.asarray(data.y)
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        bad = int(labels[(labels < 0) | (labels >= classes)][0])
        raise PropertyError(f"{source}: the data has label {bad}, but the model decides {classes} classes "
                            f"(labels 0..{classes - 1})")
    x = data.x.double()
    lower, upper = data.boxes(x)
    centre = x.clamp(lower, upper)
    return [RobustnessInstance(i, centre[i].numpy().reshape(shape), int(data.y[i]),
                               lower[i].numpy().reshape(shape), upper[i].numpy().reshape(shape), timeout)
            for i in range(len(x))]


def samples_sha256(samples: Iterable[RobustnessInstance]) -> str:
    """The sha256 of the samples' content (index, centre, label, box, timeout), whichever file they came from."""
    return content_sha256([(s.index, s.x, s.label, s.lower, s.upper, s.timeout) for s in samples])


def samples_digests(samples: Iterable[RobustnessInstance]) -> dict[str, str]:
    """A journal's keys for the samples: ``data`` (index, centre, label) and ``boxes`` (box, timeout) apart,
    so that a run at another eps is told that the boxes differ, not the data."""
    samples = list(samples)
    return {"data": content_sha256([(s.index, s.x, s.label) for s in samples]),
            "boxes": content_sha256([(s.lower, s.upper, s.timeout) for s in samples])}


def certify(network: Network, onnx_path: str | Path, samples: Iterable[RobustnessInstance],
            settings: SearchSettings, journal: Journal | None = None, resume: bool = False,
            on_record: Callable[[dict], None] | None = None, cluster: str | None = None,
            deadline: float = math.inf) -> CertifyReport:
    """Run every sample, appending each record to the journal as soon as it is known: in order here, or on a
    Dask ``cluster`` (``local:N`` or a scheduler address) in chunks; the report lists them in sample order.
    ``deadline`` (``time.perf_counter``) stops new samples; a sample under way ends within its own timeout,
    and samples not run are left out of the report."""
    report = CertifyReport()
    done = {}
    if journal is not None:
        done = {r["index"]: r for r in journal.start(resume)}

    def keep(record: dict, fresh: bool) -> None:
        if fresh and journal is not None:
            journal.append(record)
        report.records.append(record)
        if on_record is not None:
            on_record(record)

    if not cluster:
        for sample in samples:
            if sample.index in done:
                keep(done[sample.index], False)
            elif time.perf_counter() < deadline:
                keep(certify_one(network, onnx_path, sample, _with_timeout(settings, sample)), True)
        return report
    from certprune.cluster import connect, run_chunks

    samples = list(samples)
    for sample in samples:
        if sample.index in done:
            keep(done[sample.index], False)
    todo = [s for s in samples if s.index not in done]
    if todo:
        with connect(cluster) as client:
            for record in run_chunks(client, _cluster_chunk, (str(onnx_path), settings), todo, deadline):
                keep(record, True)
    position = {s.index: i for i, s in enumerate(samples)}
    report.records.sort(key=lambda r: position.get(r["index"], len(position)))
    return report


def _with_timeout(settings: SearchSettings, sample: RobustnessInstance) -> SearchSettings:
    return replace(settings, timeout=sample.timeout if sample.timeout is not None else settings.timeout)


def _cluster_chunk(setup: tuple, chunk: list[RobustnessInstance]) -> list[dict]:
    """One Dask task: these samples on the worker process's own copy of the model (loaded once)."""
    import torch

    from certprune.cluster import cached
    from certprune.onnx_io import load_onnx

    torch.set_num_threads(1)
    onnx_path, settings = setup
    network = cached(onnx_path, load_onnx)
    return [certify_one(network, onnx_path, sample, _with_timeout(settings, sample)) for sample in chunk]


def certify_data(model: Network | str | Path, x, y=None, eps: float | None = None, *, lower=None, upper=None,
                 timeout: float = 60.0, settings: SearchSettings | None = None, journal: Journal | None = None,
                 resume: bool = False) -> CertifyReport:
    """Certified accuracy of ``model`` (a Network or an ONNX path) on samples ``x`` with labels ``y`` (numpy
    arrays or tensors, ``x`` in the model's input shape) or, without ``y``, on a DataLoader ``x`` (any iterable
    of ``(x, y)`` batches), each an L-inf ball of radius ``eps`` clipped to ``[lower, upper]`` (numbers or
    per-feature arrays; default unbounded). A Network is written to a temporary ONNX file so that
    counterexamples are replayed with onnxruntime like any other."""
    import tempfile

    import torch

    from certprune.onnx_io import load_onnx, save_onnx

    if eps is None:
        raise CertpruneError("certify needs eps=, the L-inf radius")
    if y is None:
        if isinstance(x, (np.ndarray, torch.Tensor)):
            raise CertpruneError("certify needs the labels y with an array x (or a DataLoader of (x, y) batches)")
        try:
            batches = [(np.asarray(bx), np.asarray(by)) for bx, by in x]
            x, y = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
        except (TypeError, ValueError) as error:
            raise CertpruneError(f"certify takes x and y, or a DataLoader of (x, y) batches; got "
                                 f"{type(x).__name__} ({error})") from None

    class _Data:  # the two things samples_from_data reads of a data set
        def __init__(self) -> None:
            self.x = torch.as_tensor(np.asarray(x, dtype=np.float64))
            self.y = torch.as_tensor(np.asarray(y)).long().reshape(-1)

        def boxes(self, centre):
            return clipped_ball(centre, eps, lower, upper)

    settings = settings or SearchSettings(timeout=timeout)
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(model, Network):
            network, path = model, Path(folder) / "model.onnx"
            save_onnx(network, path)
        else:
            network, path = load_onnx(model), Path(model)
        samples = samples_from_data(network, str(path), _Data(), settings.timeout)
        return certify(network, path, samples, settings, journal=journal, resume=resume)
