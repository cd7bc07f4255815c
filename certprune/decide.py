"""One VNN-LIB property of one ONNX file decided as `certprune verify` and `certprune batch` both do: the numpy
fast path first (``certprune.fastpath``: small dense chains, a short budget), then the full engine with what is
left of the deadline. The full engine (torch, onnx, scipy) is imported only when the fast path hands over."""
from __future__ import annotations

import sys

from certprune.deadline import Deadline, DeadlineExpired
from certprune.fastpath import try_vnnlib
from certprune.spec.vnnlib import VnnlibProperty
from certprune.types import Counterexample, Result, Verdict

# With arithmetic "real": the fast path's share of the timeout. ACAS Xu 1_1 prop_5 (a near tie that only
# real arithmetic proves) took 21 s of 60 on a loaded machine; 1_9 prop_7 (sat) needs the full engine's
# falsifier, which a fast path holding all 60 s never reached.
REAL_SHARE = 0.5
# The full engine's imports (torch, onnx, scipy) take 1.8-3 s on this machine before any bound: with less
# time left than that, starting it could only overrun the deadline (--timeout 0.3 ended after 2.3 s).
ENGINE_START_SECONDS = 3.0


def decide_vnnlib(model: str, prop: VnnlibProperty, deadline: Deadline, threads: int = 1,
                  arithmetic: str = "float32") -> Result:
    """The verdict, with the fast path's details under ``settings["fast_path"]``.

    With ``arithmetic="real"`` the fast path, whose float64 bounds can then drop the float32 model's rounding
    margin, gets half the timeout (``REAL_SHARE``); the full engine, with the rest, keeps its float32 margins,
    which hold for the real-valued network too (they are wider than it needs), and its stronger falsifier."""
    if arithmetic == "real":
        result, fast = try_vnnlib(model, prop, deadline, budget=REAL_SHARE * deadline.remaining(),
                                  max_domains=10**12, arithmetic="real")
    else:
        result, fast = try_vnnlib(model, prop, deadline)
    if result is not None:
        return result
    if deadline.expired():
        result = Result(Verdict.TIMEOUT, seconds=deadline.elapsed())
    elif "torch" not in sys.modules and deadline.remaining() < ENGINE_START_SECONDS:
        result = Result(Verdict.TIMEOUT, seconds=deadline.elapsed(),
                        settings={"decided_by": "too little time left to start the full engine"})
    else:
        result = _full_engine(model, prop, deadline, threads)
        if arithmetic == "real" and result.verdict is Verdict.FALSIFIED:
            result = _real_counterexample(model, prop, result)
    return Result(result.verdict, result.counterexample, result.certificate, result.seconds,
                  {**result.settings, "fast_path": fast})


def _real_counterexample(model: str, prop: VnnlibProperty, result: Result) -> Result:
    """The full engine's counterexample (float32, replayed by onnxruntime) kept only if the exact real-valued
    network violates the property there too (``certprune.realcheck``); else unknown, with the reason."""
    import numpy as np

    from certprune.bab.attack import replay_on_onnx
    from certprune.bounds.rounding import real_outputs
    from certprune.floats import float32_box
    from certprune.onnx_io import load_onnx, weights_from_file
    from certprune.realcheck import holds_for_real
    from certprune.runtime import OnnxRuntimeModel

    found = np.asarray(result.counterexample.inputs, dtype=np.float32).ravel()
    network = load_onnx(model)
    exact = weights_from_file(model, network)
    runtime = OnnxRuntimeModel(model)
    for disjunct in prop.disjuncts:
        # the engine's inputs are the float32 roundings of the box's points, which may lie just outside it:
        # the nearest float32 point of the box itself
        x = np.clip(found, *float32_box(disjunct.lower, disjunct.upper, outward=False))
        x64 = x.astype(np.float64)
        if np.any(x64 < np.ravel(disjunct.lower)) or np.any(x64 > np.ravel(disjunct.upper)):
            continue  # a box thinner than one float32 step
        if not replay_on_onnx(runtime, x, *zip(*disjunct.constraints)):
            continue
        if holds_for_real(*real_outputs(network, x64, exact), disjunct.constraints):
            example = Counterexample(x, runtime.run_flat(x), replayed=True)
            return Result(Verdict.FALSIFIED, example, result.certificate, result.seconds, result.settings)
    reason = "a counterexample of the float32 model only: the real-valued network meets the property there"
    return Result(Verdict.UNKNOWN, seconds=result.seconds, settings={**result.settings, "decided_by": reason})


def _full_engine(model: str, prop: VnnlibProperty, deadline: Deadline, threads: int) -> Result:
    import torch

    from certprune.bab.instances import verify_instances, vnnlib_instances
    from certprune.bab.search import SearchSettings
    from certprune.onnx_io import load_onnx

    # Bound passes are many small tensor operations: on a shared machine a second thread that waits for a
    # core makes each one far slower (30x measured on 2 busy cores), so one thread is the default.
    torch.set_num_threads(threads)
    settings = SearchSettings(timeout=deadline.ends - deadline.started)
    try:
        network = load_onnx(model, deadline)
        instances = vnnlib_instances(network, prop)
        return verify_instances(network, model, instances, settings, deadline)
    except DeadlineExpired as expired:
        return Result(Verdict.TIMEOUT, seconds=deadline.elapsed(), settings={"decided_by": str(expired)})
