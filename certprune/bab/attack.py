"""The falsifier: find an input in a box whose outputs meet a disjunction of conjunctions A_k @ y <= b_k.

It minimises the margin loss

    loss(x) = min_k max_i (A_k @ y - b_k)_i        (<= 0 exactly at a counterexample)

which covers every VNN-LIB shape: one row (a threshold), both sides of one output (a band: the larger of
the two violations), many outputs, and disjunctions (the nearest conjunction). Only the box's free
coordinates are searched (VNN-LIB boxes often fix most inputs). A round tries random points first (the
center, box corners, faces, uniform samples, the caller's starting points and the best points of earlier
rounds), then descends (Adam, in coordinates scaled to the box) from the most promising of them and from
fresh random starts, all restarts in one batch; with several conjunctions the descents aim at each in turn
(as alpha-beta-CROWN attacks every target at once) and some at the nearest. A point is returned only after
the network, run in float32, meets a conjunction exactly on its float32 input inside the box, and the
caller's ``accept`` (the replay on the original model) agrees; ``replay_on_onnx`` is that replay for ONNX
files.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from certprune.deadline import Deadline
from certprune.floats import float32_box
from certprune.network import Network
from certprune.runtime import OnnxRuntimeModel

ALL_CORNERS_UP_TO = 10  # boxes with at most this many free coordinates get every corner
KEEP = 16  # best points kept between rounds
CHUNK = 256  # points evaluated at once while sampling (the deadline is checked between chunks)
Accept = Callable[[np.ndarray], bool]


def find_counterexample(network: Network, lower, upper, A_list: Sequence, b_list: Sequence, *,
                        restarts: int = 16, steps: int = 50, samples: int = 2048, seed: int = 0,
                        time_limit: float | None = None, deadline: Deadline | None = None,
                        accept: Accept | None = None) -> np.ndarray | None:
    """A float32 input (network input shape) meeting some ``A_list[k] @ y <= b_list[k]``, or None.

    ``lower``/``upper`` have the network's per-sample input shape (or are flat). ``samples`` random
    points are tried first (for low-dimensional inputs, raising it is the cheapest way to search harder),
    then ``restarts`` descents of ``steps`` steps. Deterministic for a given ``seed``; the search stops at
    ``deadline`` (or after ``time_limit`` seconds).
    """
    if deadline is None:
        deadline = Deadline.never() if time_limit is None else Deadline(time_limit)
    falsifier = Falsifier(network, lower, upper, A_list, b_list, seed=seed, accept=accept)
    return falsifier.round(deadline, restarts=restarts, steps=steps, samples=samples)


class Falsifier:
    """The falsifier of one box, run in rounds that share what they learnt (the best points so far)."""

    def __init__(self, network: Network, lower, upper, A_list: Sequence, b_list: Sequence, *, seed: int = 0,
                 accept: Accept | None = None) -> None:
        self.net = network.to(torch.float32)
        self.shape = network.input_shape
        lo, hi = float32_box(_numpy(lower).ravel(), _numpy(upper).ravel(), outward=False)
        if lo.size != math.prod(self.shape):
            raise ValueError(f"box has {lo.size} coordinates, the network input {self.shape} has "
                             f"{math.prod(self.shape)}")
        self.spec = _Spec(A_list, b_list)
        if self.spec.A.shape[1] != math.prod(network.output_shape):
            raise ValueError(f"constraints have {self.spec.A.shape[1]} columns, the network has "
                             f"{math.prod(network.output_shape)} outputs")
        self.base = torch.from_numpy(lo)
        self.free = torch.from_numpy(np.flatnonzero(hi > lo))
        self.lo, self.hi = self.base[self.free], torch.from_numpy(hi)[self.free]
        self.accept = accept
        self.generator = torch.Generator().manual_seed(seed)
        self.best = torch.empty(0, len(self.free))  # free coordinates of the best points so far
        self.best_loss = torch.empty(0)
        self.rounds = 0

    @property
    def lowest_loss(self) -> float:
        """The smallest loss seen: how far the best point so far is from a counterexample (inf if none)."""
        return float(self.best_loss.min()) if len(self.best_loss) else math.inf

    def round(self, deadline: Deadline, *, restarts: int = 16, steps: int = 50, samples: int = 2048,
              starts: np.ndarray | None = None, step_size: float = 0.02) -> np.ndarray | None:
        """One round: sampling, then ``restarts`` descents of ``steps`` Adam steps of ``step_size`` (a share of
        the box width, decaying tenfold). ``starts``: extra points (network input shape, batched) to try first
        and descend from."""
        self.rounds += 1
        extra = self._free_part(starts)
        initial = self._initial_points(samples) if samples > 0 else self.best[:0]
        candidates = torch.cat([extra, self.best, initial])
        losses, found = self._sample(candidates, deadline)
        candidates = candidates[:len(losses)]
        if found is not None or steps <= 0 or restarts <= 0 or deadline.expired() or not len(self.free):
            return found
        order = torch.argsort(losses, stable=True)
        chosen = torch.cat([extra, candidates[order[:max((restarts + 1) // 2 - len(extra), 0)]]])[:restarts]
        fresh = self.lo + torch.rand((restarts - len(chosen), len(self.free)), generator=self.generator) * (
            self.hi - self.lo)
        return self._descend(torch.cat([chosen, fresh]), steps, step_size, deadline)

    # ---- points ---------------------------------------------------------------------------------

    def inputs(self, z: torch.Tensor) -> torch.Tensor:
        """Network inputs (B, *shape) from free coordinates (B, k)."""
        x = self.base.expand(len(z), -1).clone()
        x[:, self.free] = z
        return x.view(len(z), *self.shape)

    def _free_part(self, starts) -> torch.Tensor:
        if starts is None or len(starts) == 0:
            return self.best[:0]
        flat = torch.as_tensor(np.asarray(starts, dtype=np.float32)).reshape(len(starts), -1)
        return torch.max(torch.min(flat[:, self.free], self.hi), self.lo)

    def _initial_points(self, samples: int) -> torch.Tensor:
        """The center, box corners (all of them for few free coordinates), and random points of which half
        lie on faces: each coordinate at its lower or upper bound with probability 1/4 each, as
        counterexamples of piecewise-linear networks often sit on the boundary of the box."""
        k = len(self.free)
        if k == 0:
            return torch.zeros(1, 0)
        if k <= ALL_CORNERS_UP_TO:
            bits = ((torch.arange(2 ** k)[:, None] >> torch.arange(k)) & 1).float()
        else:
            bits = torch.randint(0, 2, (samples // 8, k), generator=self.generator).float()
        u = torch.rand((samples, k), generator=self.generator)
        side = torch.rand((samples // 2, k), generator=self.generator)
        u[:samples // 2] = torch.where(side < 0.25, 0.0, torch.where(side > 0.75, 1.0, u[:samples // 2]))
        fractions = torch.cat([torch.full((1, k), 0.5), bits, u])
        return self._clip(self.lo + fractions * (self.hi - self.lo))  # float32 rounding may step outside

    def _clip(self, z: torch.Tensor) -> torch.Tensor:
        return torch.max(torch.min(z, self.hi), self.lo)

    def _sample(self, z: torch.Tensor, deadline: Deadline) -> tuple[torch.Tensor, np.ndarray | None]:
        """Losses of the points, chunk by chunk, and the first counterexample among them; stops early (fewer
        losses) at a counterexample or when the deadline passes."""
        out, found = [], None
        with torch.no_grad():
            for start in range(0, len(z), CHUNK):
                chunk = z[start:start + CHUNK]
                out.append(self.spec.loss(self.net(self.inputs(chunk))))
                self._remember(chunk, out[-1])
                found = self._first_confirmed(chunk, out[-1])
                if found is not None or deadline.expired():
                    break
        return (torch.cat(out) if out else torch.empty(0)), found

    def _remember(self, z: torch.Tensor, losses: torch.Tensor) -> None:
        points, values = torch.cat([self.best, z.detach()]), torch.cat([self.best_loss, losses.detach()])
        if points.shape[1] == 0:  # no free coordinate (a box of one point): every point is the same
            ids = torch.zeros(len(points), dtype=torch.long)
        else:
            ids = torch.unique(points, dim=0, return_inverse=True)[1]
        keep, seen = [], set()
        for index in torch.argsort(values, stable=True).tolist():
            if int(ids[index]) not in seen:
                seen.add(int(ids[index]))
                keep.append(index)
                if len(keep) == KEEP:
                    break
        self.best, self.best_loss = points[keep], values[keep]

    # ---- descent --------------------------------------------------------------------------------

    def _descend(self, z: torch.Tensor, steps: int, step_size: float, deadline: Deadline) -> np.ndarray | None:
        """Adam on the free coordinates scaled to [0, 1] (so every coordinate moves by a share of its own
        width), projected back into the box after every step. On these margin losses Adam reaches
        counterexamples that signed-gradient steps miss (thin feasible sets of several rows)."""
        width = self.hi - self.lo
        u = ((z - self.lo) / torch.where(width > 0, width, 1)).clamp(0, 1)
        first, second = torch.zeros_like(u), torch.zeros_like(u)
        for step in range(1, steps + 1):
            u = u.detach().requires_grad_(True)
            z = self._clip(self.lo + u * width)
            each = self.spec.each(self.net(self.inputs(z)))
            losses = each.amin(dim=1)
            self._remember(z.detach(), losses.detach())
            found = self._first_confirmed(z.detach(), losses.detach())
            if found is not None or deadline.expired():
                return found
            (grad,) = torch.autograd.grad(self.spec.aimed(each).sum(), u)
            first.mul_(0.9).add_(grad, alpha=0.1)
            second.mul_(0.999).addcmul_(grad, grad, value=0.001)
            rate = step_size * (0.1 ** (step / steps))
            step_vector = first / (1 - 0.9 ** step) / ((second / (1 - 0.999 ** step)).sqrt() + 1e-12)
            u = (u.detach() - rate * step_vector).clamp(0, 1)
        z = self._clip(self.lo + u * width)
        with torch.no_grad():
            losses = self.spec.loss(self.net(self.inputs(z)))
        self._remember(z, losses)
        return self._first_confirmed(z, losses)

    def _first_confirmed(self, z: torch.Tensor, losses: torch.Tensor) -> np.ndarray | None:
        """The candidate with the lowest non-positive loss that passes the exact float32 check and ``accept``."""
        for index in torch.argsort(losses, stable=True)[:8].tolist():
            if not losses[index] <= 0:
                return None
            point = self.inputs(z[index:index + 1].detach())
            with torch.no_grad():
                y = self.net(point)[0].numpy()
            candidate = point[0].numpy().copy()
            if self.spec.holds(y) and (self.accept is None or self.accept(candidate)):
                return candidate
        return None


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

    def each(self, y: torch.Tensor) -> torch.Tensor:
        """(B, K) per conjunction the largest row violation; -inf for a conjunction with no rows."""
        gap = y.flatten(start_dim=1) @ self.A.T - self.b
        per = [gap[:, s:e].amax(dim=1) if e > s else torch.full((len(gap),), -math.inf)
               for s, e in zip(self.groups[:-1], self.groups[1:])]
        return torch.stack(per, dim=1)

    def loss(self, y: torch.Tensor) -> torch.Tensor:
        """(B,) min over conjunctions of the largest row violation."""
        return self.each(y).amin(dim=1)

    def aimed(self, each: torch.Tensor) -> torch.Tensor:
        """(B,) the loss each descent follows: with several conjunctions, descent r aims at conjunction
        r mod (K + 1), and at the nearest one (``loss``) when that is K. Following only the nearest one
        leaves the others unexplored: a targeted descent found an MNIST counterexample (class 1 to 3) in two
        steps that the nearest-conjunction loss missed for 60 s."""
        nearest = each.amin(dim=1)
        k = each.shape[1]
        if k < 2:
            return nearest
        aim = torch.arange(len(each)) % (k + 1)
        own = each.gather(1, aim.clamp(max=k - 1).unsqueeze(1)).squeeze(1)
        return torch.where(aim < k, own, nearest)

    def holds(self, y: np.ndarray) -> bool:
        """Exact check on one output (float64 arithmetic on the float32 outputs)."""
        gap = self.A64 @ y.astype(np.float64).ravel() - self.b64
        return any(bool(np.all(gap[s:e] <= 0)) for s, e in zip(self.groups[:-1], self.groups[1:]))


def _numpy(value) -> np.ndarray:
    return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
