"""The open domains of branch and bound: ReLU split patterns on the whole box, and input boxes (each
possibly under split constraints), kept newest first so the search goes depth first and memory stays small."""
from __future__ import annotations

from typing import Sequence

import torch

Pattern = tuple[torch.Tensor, ...]  # per ReLU layer, a flat int8 tensor: +1 active, -1 inactive, 0 free


class BoxQueue:
    """Input boxes waiting to be bounded, in batches; a batch may carry split patterns (B, N_i) per layer."""

    def __init__(self, relu_sizes: Sequence[int]) -> None:
        self.relu_sizes = tuple(relu_sizes)
        self.batches: list[tuple[torch.Tensor, torch.Tensor, Pattern | None]] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def push(self, lower: torch.Tensor, upper: torch.Tensor, patterns: Pattern | None = None) -> None:
        if len(lower):
            self.batches.append((lower, upper, patterns))
            self.count += len(lower)

    def take(self, size: int) -> tuple[torch.Tensor, torch.Tensor, Pattern | None]:
        """Up to ``size`` boxes from the newest batches; patterns are None when none of them has any."""
        lowers, uppers, patterns, count = [], [], [], 0
        while self.batches and count < size:
            lower, upper, pattern = self.batches.pop()
            room = size - count
            if len(lower) > room:
                rest = None if pattern is None else tuple(p[room:] for p in pattern)
                self.batches.append((lower[room:], upper[room:], rest))
                lower, upper = lower[:room], upper[:room]
                pattern = None if pattern is None else tuple(p[:room] for p in pattern)
            lowers.append(lower)
            uppers.append(upper)
            patterns.append(pattern)
            count += len(lower)
        self.count -= count
        if all(p is None for p in patterns):
            return torch.cat(lowers), torch.cat(uppers), None
        filled = [p if p is not None else self._free(len(l)) for p, l in zip(patterns, lowers)]
        return torch.cat(lowers), torch.cat(uppers), tuple(torch.cat(layer) for layer in zip(*filled))

    def _free(self, count: int) -> Pattern:
        return tuple(torch.zeros(count, n, dtype=torch.int8) for n in self.relu_sizes)


def bisect(lower: torch.Tensor, upper: torch.Tensor, dims: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both halves of every box along its chosen flat dimension (first halves, then second halves).

    When no float32 lies strictly between the two ends, the halves are the two ends themselves: the inputs
    are float32 numbers, so boxes keep shrinking until each is a single input the model decides.
    """
    flat_lo, flat_hi = lower.flatten(1), upper.flatten(1)
    rows = torch.arange(len(lower))
    lo_d, hi_d = flat_lo[rows, dims], flat_hi[rows, dims]
    mid = (lo_d + hi_d) / 2
    atomic = (mid <= lo_d) | (mid >= hi_d)
    left_hi, right_lo = flat_hi.clone(), flat_lo.clone()
    left_hi[rows, dims] = torch.where(atomic, lo_d, mid)
    right_lo[rows, dims] = torch.where(atomic, hi_d, mid)
    shape = lower.shape[1:]
    return (torch.cat([flat_lo, right_lo]).reshape(2 * len(lower), *shape),
            torch.cat([left_hi, flat_hi]).reshape(2 * len(lower), *shape))
