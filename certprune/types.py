"""Shared value types: input boxes, verdicts and results (no project imports)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from certprune.errors import EXIT_USAGE  # noqa: F401 (re-exported beside EXIT_CODES)

if TYPE_CHECKING:  # torch is imported where a Box is used, so that Verdict and Result load without it
    import torch


@dataclass(frozen=True)
class Box:
    """An axis-aligned input set ``lower <= x <= upper``, optionally with a leading batch dimension."""

    lower: torch.Tensor
    upper: torch.Tensor

    def __post_init__(self) -> None:
        import torch

        if self.lower.shape != self.upper.shape:
            raise ValueError(f"Box bounds differ in shape: {tuple(self.lower.shape)} vs {tuple(self.upper.shape)}")
        if torch.isnan(self.lower).any() or torch.isnan(self.upper).any():
            raise ValueError("Box bounds contain NaN")
        if (self.lower > self.upper).any():
            raise ValueError("Box lower bound exceeds upper bound")

    @classmethod
    def from_center(cls, center: torch.Tensor, eps: float, clip: tuple[float, float] | None = None) -> "Box":
        lower, upper = center - eps, center + eps
        if clip is not None:
            lower, upper = lower.clamp(*clip), upper.clamp(*clip)
        return cls(lower, upper)

    @property
    def shape(self) -> torch.Size:
        return self.lower.shape

    @property
    def center(self) -> torch.Tensor:
        return (self.lower + self.upper) / 2

    @property
    def width(self) -> torch.Tensor:
        return self.upper - self.lower

    def contains(self, x: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
        """Whether each point lies in the box; ``x`` may carry extra leading dimensions."""
        inside = (x >= self.lower - tol) & (x <= self.upper + tol)
        return inside.flatten(start_dim=x.dim() - self.lower.dim()).all(dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` uniform samples, shape ``(n, *self.shape)``; corners are as likely as the inside."""
        import torch

        u = torch.rand((n, *self.shape), generator=generator, dtype=self.lower.dtype)
        return self.lower + u * self.width

    def split(self, dim: int) -> tuple["Box", "Box"]:
        """Halve the box along flat coordinate ``dim`` (of an unbatched box)."""
        mid = self.center.flatten()[dim]
        upper_left = self.upper.flatten().clone()
        lower_right = self.lower.flatten().clone()
        upper_left[dim] = mid
        lower_right[dim] = mid
        shape = self.shape
        return Box(self.lower, upper_left.view(shape)), Box(lower_right.view(shape), self.upper)


class Verdict(enum.Enum):
    """The answer to a property: proven, disproven with a replayed witness, or undecided."""

    VERIFIED = "verified"
    FALSIFIED = "falsified"
    UNKNOWN = "unknown"
    TIMEOUT = "timeout"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self]


# Exit codes shared by every command: 0 holds, 10 violated, 20 undecided, 2 usage or input error.
EXIT_CODES = {Verdict.VERIFIED: 0, Verdict.FALSIFIED: 10, Verdict.UNKNOWN: 20, Verdict.TIMEOUT: 20}


def clipped_ball(centre: torch.Tensor, eps, lower=None, upper=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Corners of ``[centre - eps, centre + eps]`` within ``[lower, upper]`` (numbers or tensors broadcast to
    ``centre``; None: unbounded); a centre outside the domain is first clamped into it."""
    import torch

    lo = None if lower is None else torch.as_tensor(lower, dtype=centre.dtype)
    hi = None if upper is None else torch.as_tensor(upper, dtype=centre.dtype)
    inside = centre if lo is None and hi is None else centre.clamp(lo, hi)
    eps = torch.as_tensor(eps, dtype=centre.dtype)
    low, high = inside - eps, inside + eps
    return (low if lo is None else low.clamp(lo, None)), (high if hi is None else high.clamp(None, hi))


@dataclass(frozen=True)
class Counterexample:
    """An input that violates the property and the model's output on it (replayed with onnxruntime)."""

    inputs: Any
    outputs: Any
    replayed: bool


@dataclass(frozen=True)
class Certificate:
    """What proved a property: the method and any per-part evidence (partitions, sub-boxes)."""

    method: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """The outcome of one verification question."""

    verdict: Verdict
    counterexample: Counterexample | None = None
    certificate: Certificate | None = None
    seconds: float = 0.0
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict is Verdict.FALSIFIED and (self.counterexample is None or not self.counterexample.replayed):
            raise ValueError("a FALSIFIED result needs a counterexample replayed on the original model")
        if self.verdict is Verdict.VERIFIED and self.certificate is None:
            raise ValueError("a VERIFIED result needs a certificate")
