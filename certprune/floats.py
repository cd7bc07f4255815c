"""Boxes in float32: rounded outward (a superset, for bounds) or inward (a subset, for counterexamples)."""
from __future__ import annotations

import numpy as np


def float32_box(lower, upper, outward: bool) -> tuple[np.ndarray, np.ndarray]:
    """The float64 box ``[lower, upper]`` as float32 arrays.

    Outward every real point of the box lies inside the result; inward every float32 point of the result
    lies in the box. A box thinner than one float32 step has no float32 point inside: inward it becomes the
    float32 nearest its lower corner, which whoever uses it must re-check.
    """
    lower64 = np.asarray(lower, dtype=np.float64)
    upper64 = np.asarray(upper, dtype=np.float64)
    lo, hi = lower64.astype(np.float32), upper64.astype(np.float32)
    if outward:
        lo = np.where(lo > lower64, np.nextafter(lo, np.float32(-np.inf)), lo)
        hi = np.where(hi < upper64, np.nextafter(hi, np.float32(np.inf)), hi)
    else:
        lo = np.where(lo < lower64, np.nextafter(lo, np.float32(np.inf)), lo)
        hi = np.where(hi > upper64, np.nextafter(hi, np.float32(-np.inf)), hi)
        empty = lo > hi
        lo = np.where(empty, lower64.astype(np.float32), lo)
        hi = np.where(empty, lower64.astype(np.float32), hi)
    return lo.astype(np.float32), hi.astype(np.float32)
