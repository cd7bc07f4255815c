"""The open domains of branch and bound: ReLU split patterns on the whole box (with what their parent knew),
and input boxes (each possibly under split constraints), kept newest first so the search goes depth first and
memory stays small."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from certprune.bounds import Bounds
from certprune.bounds.alpha import Slopes

Pattern = tuple[torch.Tensor, ...]  # per ReLU layer, a flat int8 tensor: +1 active, -1 inactive, 0 free


@dataclass(frozen=True)
class ReluDomains:
    """A batch of n ReLU-split domains of the whole box: ``splits`` per ReLU layer (n, N_i) int8; ``prior``
    the parent's bounds, which hold on the child (a subset of the parent); ``slopes`` the parent's best
    alpha/beta, where the child's optimisation starts (None: from CROWN's slopes)."""

    splits: Pattern
    prior: Bounds
    slopes: Slopes | None

    def __len__(self) -> int:
        return len(self.splits[0]) if self.splits else len(self.prior.output_lower)

    def pattern(self, index: int) -> Pattern:
        return tuple(s[index] for s in self.splits)

    def select(self, index) -> "ReluDomains":
        slopes = None if self.slopes is None else self.slopes.select(index)
        return ReluDomains(tuple(s[index] for s in self.splits), select_bounds(self.prior, index), slopes)

    def children(self, layer: torch.Tensor, neuron: torch.Tensor) -> "ReluDomains":
        """Both children of every domain, split on its (layer, flat neuron): the active ones first, then the
        inactive ones, each with the parent's bounds and slopes (kept in bfloat16 while queued)."""
        twice = torch.cat([torch.arange(len(self))] * 2)
        slopes = None if self.slopes is None else self.slopes.select(twice).stored()
        return ReluDomains(self.child_splits(layer, neuron), select_bounds(self.prior, twice), slopes)

    def child_splits(self, layer: torch.Tensor, neuron: torch.Tensor) -> Pattern:
        """The split patterns of ``children``: the active ones first, then the inactive ones."""
        m = len(self)
        sides = torch.cat([torch.ones(m, dtype=torch.int8), -torch.ones(m, dtype=torch.int8)])
        rows, layer, neuron = torch.arange(2 * m), layer.repeat(2), neuron.repeat(2)
        splits = []
        for i, s in enumerate(self.splits):
            child = s.repeat(2, 1)
            here = layer == i
            child[rows[here], neuron[here]] = sides[here]
            splits.append(child)
        return tuple(splits)

    @staticmethod
    def cat(parts: Sequence["ReluDomains"]) -> "ReluDomains":
        if len(parts) == 1:
            return parts[0]
        if any(p.slopes is None for p in parts):
            slopes = None
        else:
            slopes = Slopes.cat([p.slopes for p in parts])
        return ReluDomains(tuple(torch.cat(s) for s in zip(*(p.splits for p in parts))),
                           cat_bounds([p.prior for p in parts]), slopes)


def select_bounds(bounds: Bounds, index) -> Bounds:
    """The bounds of some boxes of a batch (an index tensor or mask)."""
    return Bounds(bounds.output_lower[index], bounds.output_upper[index],
                  tuple(t[index] for t in bounds.pre_lower), tuple(t[index] for t in bounds.pre_upper),
                  bounds.infeasible[index], bounds.method)


def cat_bounds(parts: Sequence[Bounds]) -> Bounds:
    return Bounds(torch.cat([b.output_lower for b in parts]), torch.cat([b.output_upper for b in parts]),
                  tuple(torch.cat(t) for t in zip(*(b.pre_lower for b in parts))),
                  tuple(torch.cat(t) for t in zip(*(b.pre_upper for b in parts))),
                  torch.cat([b.infeasible for b in parts]), parts[0].method)


class DomainStack:
    """ReLU-split domains waiting to be bounded, newest batch first (depth first: the queue stays short)."""

    def __init__(self) -> None:
        self.batches: list[ReluDomains] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def push(self, domains: ReluDomains) -> None:
        if len(domains):
            self.batches.append(domains)
            self.count += len(domains)

    def take(self, size: int) -> ReluDomains:
        """Up to ``size`` domains from the newest batches."""
        parts, count = [], 0
        while self.batches and count < size:
            batch = self.batches.pop()
            room = size - count
            if len(batch) > room:
                self.batches.append(batch.select(slice(room, None)))
                batch = batch.select(slice(0, room))
            parts.append(batch)
            count += len(batch)
        self.count -= count
        return ReluDomains.cat(parts)


class Known(NamedTuple):
    """Bounds of queued boxes: lower bounds (B, K) of the specification rows and CROWN's input coefficients
    (B, K, n) (``Bounds.output_lower`` and ``Bounds.input_coefficients``)."""

    output_lower: torch.Tensor
    input_coefficients: torch.Tensor


class BoxQueue:
    """Input boxes waiting to be bounded, in batches; a batch may carry split patterns (B, N_i) per layer, or
    the bounds the look-ahead that made it already computed (``Known``): such boxes are not bounded again."""

    def __init__(self, relu_sizes: Sequence[int]) -> None:
        self.relu_sizes = tuple(relu_sizes)
        self.batches: list[tuple[torch.Tensor, torch.Tensor, Pattern | None, Known | None]] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def push(self, lower: torch.Tensor, upper: torch.Tensor, patterns: Pattern | None = None,
             known: "Known | None" = None) -> None:
        if len(lower):
            self.batches.append((lower, upper, patterns, known))
            self.count += len(lower)

    def take(self, size: int) -> tuple[torch.Tensor, torch.Tensor, Pattern | None, "Known | None"]:
        """Up to ``size`` boxes from the newest batches, all with known bounds or all without; patterns are
        None when none of them has any."""
        lowers, uppers, patterns, knowns, count = [], [], [], [], 0
        while self.batches and count < size and (not knowns or (self.batches[-1][3] is None) == (knowns[0] is None)):
            lower, upper, pattern, known = self.batches.pop()
            room = size - count
            if len(lower) > room:
                rest = None if pattern is None else tuple(p[room:] for p in pattern)
                later = None if known is None else Known(*(k[room:] for k in known))
                self.batches.append((lower[room:], upper[room:], rest, later))
                lower, upper = lower[:room], upper[:room]
                pattern = None if pattern is None else tuple(p[:room] for p in pattern)
                known = None if known is None else Known(*(k[:room] for k in known))
            lowers.append(lower)
            uppers.append(upper)
            patterns.append(pattern)
            knowns.append(known)
            count += len(lower)
        self.count -= count
        known = None if knowns[0] is None else Known(*(torch.cat(parts) for parts in zip(*knowns)))
        if all(p is None for p in patterns):
            return torch.cat(lowers), torch.cat(uppers), None, known
        filled = [p if p is not None else self._free(len(l)) for p, l in zip(patterns, lowers)]
        return torch.cat(lowers), torch.cat(uppers), tuple(torch.cat(layer) for layer in zip(*filled)), known

    def _free(self, count: int) -> Pattern:
        return tuple(torch.zeros(count, n, dtype=torch.int8) for n in self.relu_sizes)


def no_float_inside(lower: torch.Tensor, upper: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
    """(B,) whether no float32 lies strictly between the two ends of each box's coordinate ``dims``."""
    rows = torch.arange(len(lower))
    lo, hi = lower.flatten(1)[rows, dims], upper.flatten(1)[rows, dims]
    mid = (lo + hi) / 2
    return (mid <= lo) | (mid >= hi)


def bisect(lower: torch.Tensor, upper: torch.Tensor, dims: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both halves of every box along its chosen flat dimension (first halves, then second halves).

    When no float32 lies strictly between the two ends, the halves are the two ends themselves: the inputs
    are float32 numbers, so boxes keep shrinking until each is a single input the model decides.
    """
    flat_lo, flat_hi = lower.flatten(1), upper.flatten(1)
    rows = torch.arange(len(lower))
    lo_d, hi_d = flat_lo[rows, dims], flat_hi[rows, dims]
    mid = (lo_d + hi_d) / 2
    atomic = no_float_inside(lower, upper, dims)
    left_hi, right_lo = flat_hi.clone(), flat_lo.clone()
    left_hi[rows, dims] = torch.where(atomic, lo_d, mid)
    right_lo[rows, dims] = torch.where(atomic, hi_d, mid)
    shape = lower.shape[1:]
    return (torch.cat([flat_lo, right_lo]).reshape(2 * len(lower), *shape),
            torch.cat([left_hi, flat_hi]).reshape(2 * len(lower), *shape))
