"""Methods run in turn from cheap to tight, each starting from the best bounds so far, until a goal is met."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from certprune.bounds.alpha import AlphaCROWN
from certprune.bounds.base import BoundMethod, Bounds, Problem
from certprune.bounds.crown import CROWN
from certprune.bounds.ibp import IBP


@dataclass(frozen=True, kw_only=True)
class Cascade(BoundMethod):
    """Run ``methods`` in order, keeping the elementwise best bounds (max of lowers, min of uppers).

    Each method receives the best bounds so far as its prior, so it never loosens them and skips neurons they
    already decide. ``until(bounds) -> bool`` stops the cascade early, for example
    ``until=lambda b: bool((b.output_lower > 0).all())`` when C holds the margins of a robustness property.
    """

    methods: tuple[BoundMethod, ...] = (IBP(), CROWN(), AlphaCROWN())
    until: Optional[Callable[[Bounds], bool]] = None
    name = "cascade"

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("a Cascade needs at least one bound method")
        object.__setattr__(self, "methods", tuple(self.methods))

    def run(self, problem: Problem, prior: Bounds | None) -> Bounds:
        best = prior
        for method in self.methods:
            bounds = method.run(problem, best)
            best = bounds if best is None else best.intersect(bounds)
            if self.until is not None and self.until(best):
                break
        return best
