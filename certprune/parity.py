"""Checking our forward pass against onnxruntime on random inputs inside the model's input range."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from certprune.errors import ModelError
from certprune.network import Network, apply_output_transform
from certprune.runtime import OnnxRuntimeModel

PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ParityReport:
    """Largest absolute difference between our outputs and onnxruntime's, and its scale."""

    samples: int
    max_abs_diff: float
    output_scale: float

    @property
    def relative(self) -> float:
        return self.max_abs_diff / max(self.output_scale, 1e-12)

    @property
    def ok(self) -> bool:
        return self.relative <= PARITY_TOLERANCE


def input_range(network: Network, default: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """The model's input range from its metadata (``certprune.input_lower/upper``), else ``default``.

    Each bound is a number or one value per flat input feature.
    """
    size = int(np.prod(network.input_shape))
    bounds = []
    for key, fallback in (("certprune.input_lower", default[0]), ("certprune.input_upper", default[1])):
        raw = network.metadata.get(key)
        try:
            value = np.asarray(json.loads(raw) if raw is not None else fallback, dtype=np.float64)
            bounds.append(np.broadcast_to(value.ravel() if value.ndim else value, (size,)).reshape(network.input_shape))
        except (ValueError, TypeError) as error:
            raise ModelError(f"model metadata {key}={raw!r} is not a number or a list of {size} numbers") from error
    return bounds[0], bounds[1]



def check_parity(network: Network, onnx_path: str | Path, samples: int = 64, seed: int = 0,
                 bounds: tuple[np.ndarray, np.ndarray] | None = None) -> ParityReport:
    """Run both executions on the same uniform random inputs and compare the outputs."""
    lower, upper = bounds if bounds is not None else input_range(network)
    rng = np.random.default_rng(seed)
    x = (lower + rng.random((samples, *network.input_shape)) * (upper - lower)).astype(np.float32)
    reference = OnnxRuntimeModel(onnx_path)(x).astype(np.float64)
    with torch.no_grad():
        ours = apply_output_transform(network, network(torch.from_numpy(x))).numpy().reshape(samples, -1)
    diff = float(np.abs(ours.astype(np.float64) - reference).max())
    return ParityReport(samples, diff, float(np.abs(reference).max()))
