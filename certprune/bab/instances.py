"""Whole properties: a VNN-LIB file (several boxes) or a robustness YAML (many samples) on one model."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from certprune.bab.attack import replay_on_onnx
from certprune.bab.search import Constraint, SearchSettings, float32_inputs, verify_box
from certprune.deadline import Deadline
from certprune.errors import PropertyError
from certprune.network import Network
from certprune.onnx_io import load_onnx
from certprune.runtime import OnnxRuntimeModel
from certprune.spec.robustness import decision
from certprune.spec.vnnlib import VnnlibProperty, check_matches, read_vnnlib
from certprune.types import Certificate, Result, Verdict


@dataclass(frozen=True)
class Instance:
    """One verification question: a box, the counterexample constraints, and a name for reports.

    With ``label`` set (local robustness), a counterexample must change the model's decision by its own
    rule (``spec.robustness.decision``); the constraints are then only a closed superset of that. Without
    it (VNN-LIB), the constraints themselves define the unsafe set, ties included.
    """

    name: str
    lower: np.ndarray
    upper: np.ndarray
    constraints: tuple[Constraint, ...]
    label: int | None = None


def check_output_semantics(network: Network, source: str) -> None:
    """Constraints are checked on logits, which is exact only for a model without a final sigmoid/softmax.

    In float32 both saturate: a sigmoid rounds large logits to equal outputs, a softmax underflows small
    ones to 0, so even comparisons between outputs can hold on the outputs but not on the logits.
    """
    if network.output_transform is not None:
        raise PropertyError(
            f"{source}: the model ends in a {network.output_transform}, whose float32 outputs saturate; "
            "certprune verifies VNN-LIB properties on logits: export the model without the final "
            f"{network.output_transform.capitalize()} and state the property on its outputs")


def vnnlib_instances(network: Network, prop: VnnlibProperty) -> list[Instance]:
    size = int(np.prod(network.input_shape))
    out = int(np.prod(network.output_shape))
    check_matches(prop, size, out)
    instances = []
    for index, disjunct in enumerate(prop.disjuncts):
        check_output_semantics(network, prop.source)
        instances.append(Instance(f"box{index}", disjunct.lower, disjunct.upper, disjunct.constraints))
    return instances


def verify_instances(network: Network, onnx_path: str | Path, instances: Sequence[Instance],
                     settings: SearchSettings, deadline: Deadline | None = None, real_point=None) -> Result:
    """All boxes of one property: falsified if any box is, verified only if every box is. The boxes share
    one ``deadline`` (by default ``settings.timeout`` from now). ``real_point`` (``decide.RealPoint``, for
    ``--arithmetic real``) must confirm a counterexample too."""
    deadline = deadline or Deadline(settings.timeout)
    started = time.perf_counter()
    details, undecided = [], None
    for instance in instances:
        if deadline.expired():
            undecided = undecided or Result(Verdict.TIMEOUT)
            break
        result = verify_one(network, onnx_path, instance, settings, deadline, real_point)
        details.append({"box": instance.name, "verdict": result.verdict.value, **result.settings})
        if result.verdict is Verdict.FALSIFIED:
            return replace(result, seconds=time.perf_counter() - started, settings={"boxes": details})
        if result.verdict is not Verdict.VERIFIED and undecided is None:
            undecided = result  # a later box may still be falsified: look on while time is left
    seconds = time.perf_counter() - started
    if undecided is not None:
        return replace(undecided, seconds=seconds, settings={"boxes": details})
    certificate = Certificate("branch-and-bound", {"boxes": details})
    return Result(Verdict.VERIFIED, certificate=certificate, seconds=seconds, settings={"boxes": details})


def verify_one(network: Network, onnx_path: str | Path, instance: Instance, settings: SearchSettings,
               deadline: Deadline | None = None, real_point=None) -> Result:
    """One box; a counterexample counts only after onnxruntime agrees on the original file, at a float32
    input of the box (the rounding to nearest of one of its points, as onnxruntime would receive it)."""
    runtime = OnnxRuntimeModel(onnx_path)
    lowest, highest = float32_inputs(instance.lower, instance.upper)

    def replay(x: np.ndarray) -> bool:
        flat = np.asarray(x, dtype=np.float32).ravel()
        if not (np.all(flat >= lowest) and np.all(flat <= highest)):
            return False
        if instance.label is not None:
            return decision(runtime(np.asarray(x, dtype=np.float32).reshape(1, *network.input_shape))[0]) \
                != instance.label
        if real_point is not None:
            return real_point(instance.lower, instance.upper, instance.constraints, flat) is not None
        return replay_on_onnx(runtime, x, [A for A, _ in instance.constraints],
                              [b for _, b in instance.constraints])

    return verify_box(network, instance.lower, instance.upper, instance.constraints, settings, replay, deadline,
                      points_by_replay=real_point is None)


def verify_vnnlib(onnx_path: str | Path, vnnlib_path: str | Path,
                  settings: SearchSettings = SearchSettings()) -> Result:
    """Decide a VNN-LIB property on an ONNX model (the Python form of ``certprune verify``)."""
    network = load_onnx(onnx_path)
    return verify_instances(network, onnx_path, vnnlib_instances(network, read_vnnlib(vnnlib_path)), settings)
