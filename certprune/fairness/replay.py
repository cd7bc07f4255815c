"""Counterexample pairs confirmed on the ORIGINAL ONNX model before anyone calls them counterexamples.

A candidate twin input ``z`` becomes the pair ``(x, x')``; it is a counterexample only when it is an allowed
pair of the property inside the box it was searched in, and onnxruntime, running the model file as it is
(final sigmoid included, thresholded at sigmoid(t)), gives the two inputs different decisions.
"""
from __future__ import annotations

import numpy as np

from certprune.fairness.problem import FairnessProblem
from certprune.runtime import OnnxRuntimeModel


class Referee:
    """Replays candidate pairs on onnxruntime; one per process (the session is reused)."""

    def __init__(self, problem: FairnessProblem) -> None:
        if problem.onnx_path is None:
            raise ValueError("counterexamples are confirmed on the original ONNX model: give its path")
        self.problem = problem
        self.model = OnnxRuntimeModel(problem.onnx_path)
        self.replays = 0

    def confirm(self, zs: np.ndarray, lo: np.ndarray, hi: np.ndarray, method: str) -> dict | None:
        """The first candidate (rows of ``zs``) that is a real counterexample in box [lo, hi], or None."""
        problem = self.problem
        zs = np.atleast_2d(np.asarray(zs, dtype=np.float64))
        zs = zs[[problem.valid_pair(z, lo, hi) for z in zs]]
        if not len(zs):
            return None
        self.replays += len(zs)
        x1, x2 = problem.layout.pair(zs)
        shape = problem.network.input_shape
        out1 = self.model(x1.astype(np.float32).reshape(-1, *shape))
        out2 = self.model(x2.astype(np.float32).reshape(-1, *shape))
        d1, d2 = problem.rule.decide_outputs(out1), problem.rule.decide_outputs(out2)
        differ = np.flatnonzero(d1 != d2)
        if not len(differ):
            return None
        i = int(differ[0])
        named1, named2 = problem.named_pair(zs[i])
        return {"x": named1, "x_prime": named2, "outputs": [out1[i].tolist(), out2[i].tolist()],
                "decisions": [int(d1[i]), int(d2[i])], "replayed": True, "found_by": method}
