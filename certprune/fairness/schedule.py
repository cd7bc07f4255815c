"""How a fairness query's budget is spread over its partitions, so that no hard partition starves the rest.

Round 1 gives every partition a short cap (a tenth of the per-partition timeout, at least ``MIN_CAP``),
smallest partitions first, as most partitions are decided in well under a second. Each later round takes the
partitions still undecided (timeout or unknown), in the order they came, and gives each in turn a cap
``GROWTH`` times the last, up to the per-partition timeout: hard partitions are interleaved, each gets its
share of what is left before any gets more. A partition retried from scratch repeats at most
``1 / (GROWTH - 1)`` of its final effort. The total deadline stops new work at any point; whatever ran last
for a partition is its result.

This is the time-slicing that portfolio and BaB verifiers use across subproblems (nnenum and
alpha-beta-CROWN bound every subproblem before deepening any; Fairify and FairQuant give every partition
its own fixed timeout and lose the rest when one stalls).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

MIN_CAP = 1.0  # seconds: round 1 never gives less, unless the per-partition timeout is shorter
FIRST_SHARE = 0.1  # round 1's cap as a share of the per-partition timeout
GROWTH = 4.0


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Caps per round for one query; ``per_partition`` None means no cap at all (one round, no timeout)."""

    per_partition: float | None
    first_share: float = FIRST_SHARE
    min_cap: float = MIN_CAP
    growth: float = GROWTH

    def caps(self) -> Iterator[float]:
        """The cap of round 1, 2, ...: growing by ``growth``, ending with the per-partition timeout."""
        if self.per_partition is None or not math.isfinite(self.per_partition):
            yield math.inf
            return
        cap = min(self.per_partition, max(self.min_cap, self.first_share * self.per_partition))
        while cap < self.per_partition:
            yield cap
            cap *= self.growth
        yield self.per_partition

    def first_order(self, indices: Iterable[int], points: dict[int, int]) -> list[int]:
        """Easy first: the partitions with the fewest points, ties by index."""
        return sorted(indices, key=lambda i: (points.get(i, 0), i))
