"""One time budget shared by every phase of a verification: loading, attack, bounds, MILP, splitting."""
from __future__ import annotations

import math
import time
from typing import Callable

Clock = Callable[[], float]


class DeadlineExpired(Exception):
    """Raised by a phase that cannot return a partial answer when its deadline has passed."""

    def __init__(self, where: str) -> None:
        super().__init__(f"the time limit ran out during {where}")
        self.where = where


class Deadline:
    """A point in time, read from ``clock`` (seconds; ``time.perf_counter`` unless a test fakes it).

    ``Deadline(seconds)`` ends ``seconds`` after it is made (``math.inf`` never ends). ``within(seconds)``
    and ``share(fraction)`` give a shorter deadline on the same clock for one phase, never past this one.
    """

    def __init__(self, seconds: float, clock: Clock = time.perf_counter) -> None:
        if math.isnan(seconds) or seconds < 0:
            raise ValueError(f"a deadline needs seconds >= 0, got {seconds}")
        self.clock = clock
        self.started = clock()
        self.ends = self.started + seconds

    @classmethod
    def never(cls, clock: Clock = time.perf_counter) -> "Deadline":
        return cls(math.inf, clock)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> float:
        return max(self.ends - self.clock(), 0.0)

    def expired(self) -> bool:
        return self.clock() >= self.ends

    def within(self, seconds: float) -> "Deadline":
        """A deadline ``seconds`` from now, or this one if it ends sooner."""
        child = Deadline(0.0, self.clock)
        child.started = child.ends = child.clock()
        child.ends = min(self.ends, child.started + max(seconds, 0.0))
        return child

    def share(self, fraction: float) -> "Deadline":
        """A deadline after ``fraction`` of the time that remains."""
        return self.within(fraction * self.remaining())

    def check(self, where: str) -> None:
        """Raise ``DeadlineExpired(where)`` once the deadline has passed."""
        if self.expired():
            raise DeadlineExpired(where)

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f} s)"

