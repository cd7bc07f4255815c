"""A fast falsifier: box sampling then batched sign-gradient descent (PGD) on the violation margin.

The question is the verifier's: is there an ``x`` in ``[lower, upper]`` whose outputs ``y`` satisfy some
conjunction ``A_k @ y <= b_k``? The attack minimises

    loss(x) = min_k max_i (A_k @ y - b_k)_i        (<= 0 exactly at a counterexample)

first over random points (the center, box corners and uniform samples), then by PGD from the best of
them and from fresh random starts, all restarts in one batch. A point is returned only after the
network, run in float32, meets a conjunction exactly on its float32 input inside the box. Nothing is
claimed on the original model: ``replay_on_onnx`` checks that with onnxruntime.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from certprune.floats import float32_box
from certprune.network import Network
from certprune.runtime import OnnxRuntimeModel

ALL_CORNERS_UP_TO = 10  # inputs of at most this many coordinates get every box corner


def find_counterexample(network: Network, lower, upper, A_list: Sequence, b_list: Sequence, *,
                        restarts: int = 16, steps: int = 50, samples: int = 2048, seed: int = 0,
                        time_limit: float | None = None) -> np.ndarray | None:
    """A float32 input (network input shape) meeting some ``A_list[k] @ y <= b_list[k]``, or None.

    ``lower``/``upper`` have the network's per-sample input shape (or are flat). ``samples`` random
    points are tried first (for low-dimensional inputs, raising it is the cheapest way to search harder),
    then ``restarts`` descents of ``steps`` steps. Deterministic for a given ``seed``; ``time_limit``
    (seconds) stops the descent early.
    """
    deadline = math.inf if time_limit is None else time.perf_counter() + time_limit
    net32 = network.to(torch.float32)
    lo, hi = (torch.from_numpy(v.reshape(network.input_shape)) for v in float32_box(_numpy(lower), _numpy(upper), outward=False))
    spec = _Spec(A_list, b_list)
    if spec.A.shape[1] != math.prod(network.output_shape):
        raise ValueError(f"constraints have {spec.A.shape[1]} columns, the network has "
                         f"{math.prod(network.output_shape)} outputs")
    generator = torch.Generator().manual_seed(seed)
    candidates = _initial_points(lo, hi, samples, generator)
    with torch.no_grad():
        losses = spec.loss(net32(candidates))
    found = _first_confirmed(net32, candidates, losses, spec)
    if found is not None or steps <= 0 or restarts <= 0:
        return found
    best = candidates[torch.argsort(losses, stable=True)[:(restarts + 1) // 2]]
    fresh = lo + torch.rand((restarts - len(best), *lo.shape), generator=generator) * (hi - lo)
    starts = torch.max(torch.min(torch.cat([best, fresh]), hi), lo)
    return _descend(net32, starts, lo, hi, spec, steps, deadline)


def replay_on_onnx(onnx_model: str | Path | OnnxRuntimeModel, x, A, b, tolerance: float = 0.0) -> bool:
    """Whether the ORIGINAL ONNX model's outputs at ``x`` meet ``A @ y <= b + tolerance``.

    ``A, b`` is one conjunction, or lists of them (a disjunction: any one suffices). The outputs are the
    ONNX graph's own, final Sigmoid/Softmax included: VNN-LIB's ``Y_j`` are the model's outputs as they
    are (the VNN-COMP convention), and the "label stays the argmax" rows compare two outputs, which
    hold on logits exactly when they hold after an elementwise-monotone sigmoid or a softmax. So no
    transform is undone or applied here.
    """
    model = onnx_model if isinstance(onnx_model, OnnxRuntimeModel) else OnnxRuntimeModel(onnx_model)
    shape = model.session.get_inputs()[0].shape[1:]
    x = np.asarray(x, dtype=np.float32)
    if all(isinstance(d, int) for d in shape) and math.prod(shape) == x.size:
        x = x.reshape(shape)
    y = model(x[None])[0].astype(np.float64)
    pairs = zip(A, b) if isinstance(A, (list, tuple)) else [(A, b)]
    return any(bool(np.all(np.atleast_2d(Ak) @ y <= np.asarray(bk).ravel() + tolerance)) for Ak, bk in pairs)


class _Spec:
    """The disjunction of conjunctions, stacked: rows of all conjunctions and each one's row range."""

    def __init__(self, A_list: Sequence, b_list: Sequence) -> None:
        if len(A_list) != len(b_list) or not A_list:
            raise ValueError(f"need matching non-empty A_list and b_list, got {len(A_list)} and {len(b_list)}")
        A = [np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in A_list]
        self.A = torch.tensor(np.concatenate(A), dtype=torch.float32)
        self.b = torch.tensor(np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in b_list]),
                              dtype=torch.float32)
        self.A64, self.b64 = self.A.double().numpy(), np.concatenate([np.ravel(v) for v in b_list]).astype(np.float64)
        self.groups = np.cumsum([0] + [len(a) for a in A])

    def loss(self, y: torch.Tensor) -> torch.Tensor:
        """(B,) min over conjunctions of the largest row violation; -inf for a conjunction with no rows."""
        gap = y.flatten(start_dim=1) @ self.A.T - self.b
        per = [gap[:, s:e].amax(dim=1) if e > s else torch.full((len(gap),), -math.inf)
               for s, e in zip(self.groups[:-1], self.groups[1:])]
        return torch.stack(per, dim=1).amin(dim=1)

    def holds(self, y: np.ndarray) -> bool:
        """Exact check on one output (float64 arithmetic on the float32 outputs)."""
        gap = self.A64 @ y.astype(np.float64).ravel() - self.b64
        return any(bool(np.all(gap[s:e] <= 0)) for s, e in zip(self.groups[:-1], self.groups[1:]))


def _initial_points(lo: torch.Tensor, hi: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
    """The center, box corners (all of them for small inputs), and random points of which half lie on
    faces: each coordinate at its lower or upper bound with probability 1/4 each, as counterexamples
    of piecewise-linear networks often sit on the boundary of the box."""
    n = lo.numel()
    if n <= ALL_CORNERS_UP_TO:
        bits = ((torch.arange(2 ** n)[:, None] >> torch.arange(n)) & 1).float()
    else:
        bits = torch.randint(0, 2, (samples // 8, n), generator=generator).float()
    u = torch.rand((samples, n), generator=generator)
    side = torch.rand((samples // 2, n), generator=generator)
    u[:samples // 2] = torch.where(side < 0.25, 0.0, torch.where(side > 0.75, 1.0, u[:samples // 2]))
    fractions = torch.cat([torch.full((1, n), 0.5), bits, u]).view(-1, *lo.shape)
    return torch.max(torch.min(lo + fractions * (hi - lo), hi), lo)  # float32 rounding may step outside


def _descend(net: Network, x: torch.Tensor, lo, hi, spec: _Spec, steps: int, deadline: float) -> np.ndarray | None:
    """Sign-gradient steps, shrinking from a quarter of the box width to 1/100 of it."""
    width = hi - lo
    for step in range(steps):
        x = x.detach().requires_grad_(True)
        losses = spec.loss(net(x))
        found = _first_confirmed(net, x.detach(), losses.detach(), spec)
        if found is not None or time.perf_counter() > deadline:
            return found
        (grad,) = torch.autograd.grad(losses.sum(), x)
        size = 0.25 * (0.04 ** (step / max(steps - 1, 1)))  # geometric decay 1/4 -> 1/100
        x = torch.max(torch.min(x.detach() - size * width * grad.sign(), hi), lo)
    with torch.no_grad():
        return _first_confirmed(net, x, spec.loss(net(x)), spec)


def _first_confirmed(net: Network, x: torch.Tensor, losses: torch.Tensor, spec: _Spec) -> np.ndarray | None:
    """The candidate with the lowest non-positive loss that passes the exact float32 check."""
    for index in torch.argsort(losses, stable=True)[:8].tolist():
        if not losses[index] <= 0:
            return None
        point = x[index:index + 1].detach()
        with torch.no_grad():
            y = net(point)[0].numpy()
        if spec.holds(y):
            return point[0].numpy().copy()
    return None


def _numpy(value) -> np.ndarray:
    return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
