"""Whether a counterexample also holds for the real-valued network: what ``--arithmetic real`` asks about.

A counterexample is a float32 input that onnxruntime replays. Under ``--arithmetic real`` the question is the
exact real-valued network, and at a near tie the two can disagree: onnxruntime's float32 outputs meet the
output constraints while the exact outputs miss them by 1e-7 (the soundness sweep found three such cases).
Such a point is not a counterexample of the real network, so it is not reported as one.

The check is rigorous without exact arithmetic: the network runs in float64 on the float32 input, and the
distance to the exact outputs is bounded by Higham's gamma with the float64 unit roundoff (every sum of ``k``
terms plus a bias is within ``gamma(k + 1) * (sum |w x| + |b|)``, errors of earlier layers pass through
``|W|``, ReLU keeps them). The point counts only if every row of a conjunction holds with that error
against it: ``A y64 + |A| err <= b``. A true violation by less than about 1e-12 of the outputs' scale is
therefore not confirmed (the search goes on, or ends unknown), never the other way round.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

UNIT = 2.0**-53  # float64, round to nearest
SPARE = 2.0  # for the roundings of the bound's own float64 arithmetic


def gamma(terms: int) -> float:
    k = (terms + 1) * UNIT
    return SPARE * k / (1.0 - k)


def holds_for_real(y: np.ndarray, error: np.ndarray, constraints: Sequence[tuple]) -> bool:
    """Whether some conjunction ``A y <= b`` of ``constraints`` holds for every output within ``error`` of
    ``y`` (float64 outputs of the real-valued network and a bound on their distance to the exact ones)."""
    y, error = np.ravel(y).astype(np.float64), np.ravel(error).astype(np.float64)
    for A, b in constraints:
        A, b = np.atleast_2d(np.asarray(A, dtype=np.float64)), np.ravel(np.asarray(b, dtype=np.float64))
        reach = np.abs(A) @ error + gamma(A.shape[1]) * (np.abs(A) @ np.abs(y) + np.abs(b))
        if np.all(A @ y + reach <= b):
            return True
    return False


def chain_outputs(weights: Sequence, biases: Sequence[np.ndarray], x: np.ndarray,
                  apply) -> tuple[np.ndarray, np.ndarray]:
    """float64 outputs of a dense/convolutional ReLU chain (``certprune.fastpath.Chain``'s layers, the file's
    own float32 constants) at the flat input ``x``, and a bound on their distance to the exact real-valued
    outputs (infinite where float64 may underflow: ``may_underflow``)."""
    h = np.ravel(x).astype(np.float64)[None]
    error = np.zeros_like(h)
    unsafe = np.full(len(biases[-1]), np.inf)
    if may_underflow([w.weight if hasattr(w, "weight") else w for w in weights]):
        return unsafe, unsafe
    for k, (w, b) in enumerate(zip(weights, biases)):
        if may_underflow([h]):
            return unsafe, unsafe
        w64, b64 = w.astype(np.float64), np.asarray(b, dtype=np.float64)
        w_abs = w64.abs() if hasattr(w64, "weight") else np.abs(w64)
        terms = int(np.prod(w.weight.shape[1:])) if hasattr(w, "weight") else w.shape[1]
        y = apply(w64, h) + b64
        error = apply(w_abs, error) + gamma(terms) * (apply(w_abs, np.abs(h)) + np.abs(b64))
        h = np.maximum(y, 0) if k < len(weights) - 1 else y
    return h[0], error[0]


TINY = 2.0**-500  # below this, a product of two such numbers may leave float64's normal range (2^-1022)


def may_underflow(arrays) -> bool:
    """Whether some nonzero weight or value is below ``TINY`` in magnitude: only then can a product underflow,
    where Higham's relative bound fails (a sum of normal numbers that lands below the normal range is exact)."""
    return any(bool(((abs(a) > 0) & (abs(a) < TINY)).any()) for a in arrays)
