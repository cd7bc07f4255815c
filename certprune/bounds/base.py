"""What every bound method shares: the Bounds result, split constraints, checked inputs and the rounding margin."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from certprune.errors import UnsupportedLayerError
from certprune.network import Network

# Splits: per ReLU layer (in network order) an int8 tensor (B, *pre_activation_shape) with +1 (neuron forced
# active: pre >= 0), -1 (forced inactive: pre <= 0) or 0 (free); an entry may be None (no split in that layer).
Splits = Sequence[Optional[torch.Tensor]]

# Rounding margin. Every computed bound v is widened to v - REL * (|v| + m) (lower) or v + REL * (|v| + m)
# (upper), where m is the sum of the absolute values of the terms added up to evaluate v *and* of the terms of
# the forward pass's last affine step (see Interval.magnitude and LinearBound.magnitude). A sum of n floats has
# rounding error at most about n * u * sum|terms| in the worst case and sqrt(n) * u * sum|terms| in practice
# (u the unit roundoff); REL is 256 ulps, enough for both our evaluation of v and the forward pass that sampled
# outputs come from, for the layer widths of ReLU networks we verify. It also makes an exact tie lower == 0
# strictly negative, so a neuron is never declared stable from a tie.
REL = {torch.float32: 2.0**-15, torch.float64: 2.0**-44}
# Underflow (IEEE gradual underflow, onnxruntime's and torch's default). A product below the normal range is
# rounded by an absolute amount, up to half the smallest subnormal (2^-150 in float32; sums are exact there),
# which REL's relative margin does not cover, and so are our own centre (l + u) / 2 and radius (u - l) / 2 on
# a box near 0 ([0, 2^-149] has both 0). So each affine step counts TINY more in every term's magnitude and
# 2n + 1 TINYs for its products and sums: REL * TINY = 2^-149, the smallest float32 subnormal, a term.
TINY = {torch.float32: 2.0**-134, torch.float64: 2.0**-1030}


def widen_lower(value: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """A lower bound moved down by the rounding margin (see REL)."""
    return value - REL[value.dtype] * (value.abs() + magnitude)


def widen_upper(value: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """An upper bound moved up by the rounding margin (see REL)."""
    return value + REL[value.dtype] * (value.abs() + magnitude)


@dataclass(frozen=True, eq=False)
class Bounds:
    """Sound bounds for a batch of B input boxes.

    ``output_lower``/``output_upper`` are (B, K) bounds of C @ logits. ``pre_lower[i]``/``pre_upper[i]`` are
    (B, *shape) bounds of the input of the i-th ReLU layer, clamped by the splits. ``infeasible[b]`` is True when
    the splits of box b contradict its bounds (the subdomain is empty); its output bounds are then +inf/-inf.
    ``input_coefficients``, when the method keeps them (CROWN), are (B, K, n): the coefficients on the flat
    input of the linear function whose minimum over the box gave ``output_lower`` (input-split branching
    reads how much each input's width costs the bound).
    """

    output_lower: torch.Tensor
    output_upper: torch.Tensor
    pre_lower: tuple[torch.Tensor, ...]
    pre_upper: tuple[torch.Tensor, ...]
    infeasible: torch.Tensor
    method: str = ""
    input_coefficients: torch.Tensor | None = None

    @classmethod
    def of_relu_inputs(cls, pre_lower, pre_upper, infeasible: torch.Tensor, rows: int, method: str) -> "Bounds":
        """ReLU input bounds alone, with unbounded outputs for ``rows`` rows: a prior for any specification."""
        batch, dtype = infeasible.shape[0], pre_lower[0].dtype
        return cls(torch.full((batch, rows), -torch.inf, dtype=dtype), torch.full((batch, rows), torch.inf, dtype=dtype),
                   tuple(pre_lower), tuple(pre_upper), infeasible, method)

    @property
    def batch(self) -> int:
        return self.output_lower.shape[0]

    def stable_active(self, i: int) -> torch.Tensor:
        """Neurons of ReLU layer i whose input is >= 0 on the whole box: the ReLU is the identity there."""
        return self.pre_lower[i] >= 0

    def stable_inactive(self, i: int) -> torch.Tensor:
        """Neurons of ReLU layer i whose input is <= 0 on the whole box: the ReLU is zero there."""
        return self.pre_upper[i] <= 0

    def unstable(self, i: int) -> torch.Tensor:
        """Neurons of ReLU layer i whose input can take both signs: lower < 0 < upper."""
        return (self.pre_lower[i] < 0) & (self.pre_upper[i] > 0)

    def unstable_counts(self, per_box: bool = False) -> list:
        """Unstable neurons per ReLU layer: ints summed over the batch, or (B,) int64 tensors with per_box."""
        counts = [self.unstable(i).flatten(start_dim=1).sum(dim=1) for i in range(len(self.pre_lower))]
        return counts if per_box else [int(c.sum()) for c in counts]

    def intersect(self, other: "Bounds") -> "Bounds":
        """Elementwise best of two sound bounds of the same boxes: max of lowers, min of uppers."""
        if other.output_lower.shape != self.output_lower.shape or len(other.pre_lower) != len(self.pre_lower):
            raise ValueError(
                f"cannot intersect bounds of outputs {tuple(self.output_lower.shape)} over {len(self.pre_lower)} "
                f"ReLU layers with {tuple(other.output_lower.shape)} over {len(other.pre_lower)}"
            )
        method = self.method if other.method in ("", self.method) else f"{self.method}+{other.method}"
        return Bounds(
            torch.maximum(self.output_lower, other.output_lower),
            torch.minimum(self.output_upper, other.output_upper),
            tuple(torch.maximum(a, b) for a, b in zip(self.pre_lower, other.pre_lower)),
            tuple(torch.minimum(a, b) for a, b in zip(self.pre_upper, other.pre_upper)),
            self.infeasible | other.infeasible,
            method,
        )


@dataclass(frozen=True, eq=False)
class Problem:
    """Checked inputs of one bound computation, in the computation dtype.

    ``spec`` is C, (K, n) or (B, K, n) over the flattened logits. ``splits`` holds per ReLU layer a flat
    (B, N) int8 tensor or None. ``relu_positions[i]`` is the index in ``network.layers`` of the i-th ReLU.
    ``shapes`` are the per-sample shapes of the network's values (``Network.shapes``: input, then each layer).
    """

    network: Network
    lower: torch.Tensor
    upper: torch.Tensor
    spec: torch.Tensor
    splits: tuple[Optional[torch.Tensor], ...]
    shapes: tuple[tuple[int, ...], ...]
    relu_positions: tuple[int, ...]

    @property
    def batch(self) -> int:
        return self.lower.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.lower.dtype

    @property
    def rows(self) -> int:
        return self.spec.shape[-2]


def prepare(network: Network, lower: torch.Tensor, upper: torch.Tensor, C=None, splits=None) -> Problem:
    """Check shapes and values, choose the dtype (float64 if the inputs are, else float32), convert."""
    if not isinstance(lower, torch.Tensor) or not isinstance(upper, torch.Tensor):
        raise TypeError(f"lower and upper must be tensors, got {type(lower).__name__} and {type(upper).__name__}")
    dtype = torch.float64 if lower.dtype == torch.float64 else torch.float32
    lower, upper = lower.detach().to(dtype), upper.detach().to(dtype)
    expected = ("B", *network.input_shape)
    for name, t in (("lower", lower), ("upper", upper)):
        if t.dim() != len(expected) or tuple(t.shape[1:]) != network.input_shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {expected} for the network input")
    if lower.shape != upper.shape:
        raise ValueError(f"lower {tuple(lower.shape)} and upper {tuple(upper.shape)} differ in shape")
    if not (torch.isfinite(lower).all() and torch.isfinite(upper).all()):
        raise ValueError("input box bounds contain NaN or infinite values")
    bad = lower > upper
    if bad.any():
        first = torch.nonzero(bad)[0].tolist()
        raise ValueError(f"lower exceeds upper at {int(bad.sum())} entries, first at index {first}")
    if network.dtype != dtype:
        network = network.to(dtype)
    shapes = tuple(network.shapes())
    positions = tuple(network.relu_positions())
    spec = _spec(C, math.prod(shapes[-1]), lower.shape[0], dtype)
    flat_splits = _splits(splits, [shapes[p + 1] for p in positions], lower.shape[0])
    return Problem(network, lower, upper, spec, flat_splits, shapes, positions)


def _spec(C, n_out: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
    if C is None:
        return torch.eye(n_out, dtype=dtype)
    C = torch.as_tensor(C).detach().to(dtype)
    if C.dim() not in (2, 3) or C.shape[-1] != n_out or (C.dim() == 3 and C.shape[0] != batch):
        raise ValueError(f"C has shape {tuple(C.shape)}, expected (K, {n_out}) or ({batch}, K, {n_out})")
    if not torch.isfinite(C).all():
        raise ValueError("C contains NaN or infinite values")
    return C


def _splits(splits, shapes: list, batch: int) -> tuple:
    if splits is None:
        return (None,) * len(shapes)
    splits = list(splits)
    if len(splits) != len(shapes):
        raise ValueError(f"splits has {len(splits)} entries, the network has {len(shapes)} ReLU layers")
    flat = []
    for i, (s, shape) in enumerate(zip(splits, shapes)):
        if s is None:
            flat.append(None)
            continue
        s = torch.as_tensor(s)
        if tuple(s.shape) != (batch, *shape):
            raise ValueError(f"splits[{i}] has shape {tuple(s.shape)}, expected {(batch, *shape)}")
        if ((s != 0) & (s != 1) & (s != -1)).any():
            raise ValueError(f"splits[{i}] contains values other than -1, 0 and +1")
        flat.append(s.to(torch.int8).reshape(batch, -1) if (s != 0).any() else None)
    return tuple(flat)


def settle(problem: Problem, i: int, lower, upper, prior: Bounds | None, infeasible: torch.Tensor):
    """Tighten flat (B, N) bounds of ReLU layer i by the prior bounds and clamp them by the splits.

    A forced-active neuron gets lower >= 0, a forced-inactive one upper <= 0; where that makes lower > upper
    the subdomain is empty and ``infeasible`` (B,) is updated in place.
    """
    if prior is not None:
        lower = torch.maximum(lower, prior.pre_lower[i].reshape(lower.shape))
        upper = torch.minimum(upper, prior.pre_upper[i].reshape(upper.shape))
    split = problem.splits[i]
    if split is not None:
        lower = torch.where(split > 0, lower.clamp(min=0), lower)
        upper = torch.where(split < 0, upper.clamp(max=0), upper)
    infeasible |= (lower > upper).any(dim=1)
    return lower, upper


def finish(problem: Problem, pre: list, out_lower, out_upper, infeasible, prior: Bounds | None, method: str) -> Bounds:
    """Assemble Bounds: per-layer shapes, the prior's outputs, and +inf/-inf for empty subdomains."""
    if prior is not None:
        out_lower = torch.maximum(out_lower, prior.output_lower)
        out_upper = torch.minimum(out_upper, prior.output_upper)
        infeasible = infeasible | prior.infeasible
    empty = infeasible[:, None]
    out_lower = torch.where(empty, torch.inf, out_lower)
    out_upper = torch.where(empty, -torch.inf, out_upper)
    batch = problem.batch
    shapes = [problem.shapes[p + 1] for p in problem.relu_positions]
    pre_lower = tuple(l.reshape(batch, *s) for (l, _), s in zip(pre, shapes))
    pre_upper = tuple(u.reshape(batch, *s) for (_, u), s in zip(pre, shapes))
    return Bounds(out_lower, out_upper, pre_lower, pre_upper, infeasible, method)


def check_prior(problem: Problem, prior: Bounds | None) -> None:
    if prior is None:
        return
    expected = (problem.batch, problem.rows)
    if tuple(prior.output_lower.shape) != expected or len(prior.pre_lower) != len(problem.relu_positions):
        raise ValueError(
            f"prior bounds cover outputs {tuple(prior.output_lower.shape)} and {len(prior.pre_lower)} ReLU layers; "
            f"expected {expected} and {len(problem.relu_positions)}"
        )


def check_kinds(network: Network, rules: dict, method: str) -> None:
    """Raise UnsupportedLayerError naming the first layer kind the method has no rule for."""
    for index, layer in enumerate(network.layers):
        kind = getattr(layer, "kind", type(layer).__name__)
        if kind not in rules:
            raise UnsupportedLayerError(
                f"{method} has no rule for layer kind '{kind}' ({type(layer).__name__} at layer {index}); "
                f"supported kinds: {', '.join(sorted(rules))}"
            )


class BoundMethod(ABC):
    """A bound propagation method: ``compute`` checks the inputs, ``run`` is the one method to implement."""

    name = "bounds"

    def compute(self, network: Network, lower: torch.Tensor, upper: torch.Tensor, C=None,
                splits: Splits | None = None, *, prior: Bounds | None = None) -> Bounds:
        """Bounds of C @ network(x) for x in each box [lower[b], upper[b]] (and of every ReLU input).

        ``prior``: bounds already known to hold on these boxes for this C and these splits (for example from a
        cheaper method or a parent subdomain in branch and bound); the result is never looser than it.
        """
        problem = prepare(network, lower, upper, C, splits)
        check_prior(problem, prior)
        with torch.no_grad():
            return self.run(problem, prior)

    @abstractmethod
    def run(self, problem: Problem, prior: Bounds | None) -> Bounds:
        """Bounds for checked inputs (called without autograd)."""
