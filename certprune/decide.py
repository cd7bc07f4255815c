"""One VNN-LIB property of one ONNX file decided as `certprune verify` and `certprune batch` both do: the numpy
fast path first (``certprune.fastpath``: small dense chains, a short budget), then the full engine with what is
left of the deadline. The full engine (torch, onnx, scipy) is imported only when the fast path hands over."""
from __future__ import annotations

import sys
from dataclasses import replace

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
        result = _full_engine(model, prop, deadline, threads, real=arithmetic == "real")
    return Result(result.verdict, result.counterexample, result.certificate, result.seconds,
                  {**result.settings, "fast_path": fast})


class RealPoint:
    """With ``--arithmetic real``, what makes a counterexample: a float32 point of the box itself (not only the
    rounding of one) at which onnxruntime's outputs violate the property and so do the exact real-valued
    network's (``certprune.realcheck``). The full engine's replay asks this, so a point of the float32 model
    alone is passed over and the search goes on."""

    def __init__(self, model: str, network) -> None:
        self.model, self.network = model, network
        self._checks = None  # (exact weights?, onnxruntime session): made at the first candidate, if one comes

    @property
    def runtime(self):
        return self._prepared()[1]

    def _prepared(self):
        if self._checks is None:
            from certprune.onnx_io import weights_from_file
            from certprune.runtime import OnnxRuntimeModel

            self._checks = (weights_from_file(self.model, self.network), OnnxRuntimeModel(self.model))
        return self._checks

    def __call__(self, lower, upper, constraints, found):
        """The point (``found`` moved to the nearest float32 point of the box), or None."""
        import numpy as np

        from certprune.bab.attack import replay_on_onnx
        from certprune.bounds.rounding import real_outputs
        from certprune.floats import float32_box
        from certprune.realcheck import holds_for_real

        # the engine's inputs are the float32 roundings of the box's points, which may lie just outside it
        x = np.clip(np.asarray(found, dtype=np.float32).ravel(), *float32_box(lower, upper, outward=False))
        x64 = x.astype(np.float64)
        if np.any(x64 < np.ravel(lower)) or np.any(x64 > np.ravel(upper)):
            return None  # a box thinner than one float32 step
        exact, runtime = self._prepared()
        if not replay_on_onnx(runtime, x, *zip(*constraints)):
            return None
        return x if holds_for_real(*real_outputs(self.network, x64, exact), constraints) else None


def _full_engine(model: str, prop: VnnlibProperty, deadline: Deadline, threads: int, real: bool = False) -> Result:
    """The branch and bound search on every box; with ``real``, a counterexample is a ``RealPoint``."""
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
        real_point = RealPoint(model, network) if real else None
        result = verify_instances(network, model, instances, settings, deadline, real_point)
        if real_point is None or result.counterexample is None:
            return result
        box = next(i for i in instances if i.name == result.settings["boxes"][-1]["box"])
        x = real_point(box.lower, box.upper, box.constraints, result.counterexample.inputs)
        if x is None:  # the search's replay confirmed this very point: not expected, and never reported
            return Result(Verdict.UNKNOWN, seconds=result.seconds,
                          settings={**result.settings, "decided_by": "a counterexample that is not one for real"})
        return replace(result, counterexample=Counterexample(x, real_point.runtime.run_flat(x), replayed=True))
    except DeadlineExpired as expired:
        return Result(Verdict.TIMEOUT, seconds=deadline.elapsed(), settings={"decided_by": str(expired)})
