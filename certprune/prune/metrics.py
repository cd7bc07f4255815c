"""What a pruned network is measured by: size, FLOPs (as ShrinkBench counts them), accuracy, stability, certification."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from certprune.bounds import CROWN, BoundMethod
from certprune.network import Conv2d, Dense, Network
from certprune.prune.dataset import PruneData, predict


def parameter_count(network: Network, nonzero: bool = True) -> int:
    """Weights, biases and Affine scales/shifts; with ``nonzero`` only the entries that are not zero."""
    total = 0
    for layer in network.layers:
        for name in ("weight", "bias", "scale", "shift"):
            tensor = getattr(layer, name, None)
            if tensor is not None:
                total += int((tensor != 0).sum()) if nonzero else tensor.numel()
    return total


def flops(network: Network, nonzero: bool = True) -> int:
    """Multiply-accumulates of the Dense and Conv2d layers, one per weight entry per output position
    (ShrinkBench's count; with ``nonzero`` zero weights cost nothing). Elementwise layers are free."""
    shapes = network.shapes()
    total = 0
    for layer, out_shape in zip(network.layers, shapes[1:]):
        if isinstance(layer, (Dense, Conv2d)):
            weights = int((layer.weight != 0).sum()) if nonzero else layer.weight.numel()
            total += weights * (math.prod(out_shape[1:]) if isinstance(layer, Conv2d) else 1)
    return total


def accuracy(network: Network, data: PruneData, batch_size: int = 1024) -> float:
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            logits = network(data.x[start: start + batch_size].to(network.dtype))
            correct += int((predict(logits) == data.y[start: start + batch_size]).sum())
    return correct / max(len(data), 1)


def unstable_neurons(network: Network, data: PruneData, method: BoundMethod | None = None) -> float:
    """Mean number of unstable ReLUs (l < 0 < u) per data box."""
    if len(data) == 0 or network.relu_count == 0:
        return 0.0
    lower, upper = data.boxes()
    bounds = (method or CROWN()).compute(network, lower, upper)
    return sum(bounds.unstable_counts()) / len(data)


def margin_spec(y: torch.Tensor, n_logits: int) -> torch.Tensor:
    """Per sample, the rows C (B, R, n) whose positive lower bounds prove the label on a box:
    ``y_label - y_j`` for every other class, or ``+y`` / ``-y`` for label 1 / 0 of a single logit."""
    if n_logits == 1:
        return (2.0 * y.to(torch.float32) - 1.0).reshape(-1, 1, 1)
    eye = torch.eye(n_logits)
    rows = eye[y][:, None, :] - eye[None, :, :]  # (B, n, n): row j is e_label - e_j
    keep = ~torch.eye(n_logits, dtype=torch.bool)[y]  # drop the row j == label
    return rows[keep].reshape(len(y), n_logits - 1, n_logits)


def certified(network: Network, data: PruneData, methods: Sequence[BoundMethod] = (CROWN(),)) -> torch.Tensor:
    """Per sample, whether bounds prove its label on its whole box (incomplete: False may be robust).

    Each method in turn runs on the samples not yet proven, so a costly one only sees the hard cases.
    """
    proven = torch.zeros(len(data), dtype=torch.bool)
    n_logits = math.prod(network.output_shape)
    lower, upper = data.boxes()
    for method in methods:
        todo = torch.nonzero(~proven).flatten()
        if len(todo) == 0:
            break
        C = margin_spec(data.y[todo], n_logits)
        bounds = method.compute(network, lower[todo], upper[todo], C=C)
        proven[todo] = (bounds.output_lower > 0).all(dim=1)
    return proven
