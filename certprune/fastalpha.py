"""alpha-CROWN for the numpy fast path: CROWN's output bounds with the lower slopes of unstable ReLUs optimised.

CROWN bounds an unstable ReLU from below by ``a * z`` with a fixed slope ``a`` (1 where ``u >= -l``, else 0);
any ``a`` in [0, 1] is sound, and the best one depends on the box and the output row. As alpha-CROWN (Xu et al.,
"Fast and complete", ICLR 2021) does, every (box, row, unstable neuron) gets its own slope, moved by projected
Adam along the bound's gradient, with the intermediate bounds held fixed. Every step's bound is computed by
``Bounder.rows``, the same widened recurrence CROWN uses, so each is a sound bound and the best per row is kept.

The gradient needs no autograd: the bound is linear in the backward pass's coefficients, so its derivative in
the slope of neuron i of a ReLU layer is ``A_i * zhat_i`` where ``A_i > 0`` (the row's coefficient arriving at
that neuron; where it is negative the upper line is used and the slope does not enter) and ``zhat_i`` is that
neuron's input in the relaxed network evaluated at the input corner the bound is attained at, one forward pass
per row. Near ties that CROWN leaves open on small boxes (ACAS Xu 3_3 property 2) close without halving further.
"""
from __future__ import annotations

import numpy as np

from certprune.fastconv import apply

LR = 0.1  # alpha-CROWN's learning rate (bab's AlphaCROWN: Adam at 0.1)
BETAS, EPS = (0.9, 0.999), 1e-8


def optimised_lower(bounder, layers, steps: int = 20, lr: float = LR, rows: np.ndarray | None = None,
                    floor: np.ndarray | None = None, margin=None) -> np.ndarray:
    """(B, R) lower bounds of ``bounder.C @ chain(x)`` over the boxes of ``layers`` (``Bounder.layers``), at
    least CROWN's (its slopes are the start), the interval bound and ``floor`` (bounds known otherwise).

    ``rows`` (B, G): only these rows of C are optimised per box (the others keep ``floor``, or the interval
    bound). With ``margin`` (bounds (B, R) -> (B,), > 0 where they prove what is asked) a box stops being
    optimised once proven. (Giving up on boxes whose last gain, kept up, would not prove them in the remaining
    steps left 2.6x as many boxes open on ACAS Xu 3_3 property 2: Adam's gains are not steady.)"""
    result = layers.interval if floor is None else np.maximum(layers.interval, floor)
    if not layers.relaxations:  # no ReLU: CROWN is exact up to its margin
        return result
    if rows is None:  # every row, as CROWN computes them (the same sums: its bound is the first step's)
        rows = np.broadcast_to(np.arange(len(bounder.C)), (len(result), len(bounder.C)))
        A, forward = bounder.C, layers.forward
    else:
        A, forward = bounder.C[rows], np.take_along_axis(layers.forward, rows, axis=1)
    slopes = [np.repeat(lower[:, None, :], rows.shape[1], axis=1) for lower, _, _ in layers.relaxations]
    unstable = [(bias > 0)[:, None, :] for _, _, bias in layers.relaxations]  # upper bias -u l / (u - l) > 0
    moments = [(np.zeros_like(s), np.zeros_like(s)) for s in slopes]
    result = result.copy()
    active = np.arange(len(result))
    for step in range(steps + 1):
        bounder.check_time()
        trace: list = []
        bound, coefficients = bounder.rows(layers, A, slopes, trace, forward)
        result[active[:, None], rows] = np.maximum(result[active[:, None], rows], bound)
        if step == steps:
            break
        if margin is not None:
            going = margin(result[active]) <= 0
            if not going.any():
                break
            if not going.all():  # drop the boxes proven
                active, rows, layers, coefficients = active[going], rows[going], layers.take(going), coefficients[going]
                A, forward = (A[going] if A.ndim == 3 else A), forward[going]
                slopes, unstable = [s[going] for s in slopes], [u[going] for u in unstable]
                moments = [(m[going], v[going]) for m, v in moments]
                trace = [a[going] if a.ndim == 3 else a for a in trace]
        gradients = _gradients(bounder, layers, slopes, trace[::-1], coefficients)
        for k, (slope, gradient, mask, (m, v)) in enumerate(zip(slopes, gradients, unstable, moments)):
            gradient = np.where(mask, gradient, 0.0)
            m[:] = BETAS[0] * m + (1 - BETAS[0]) * gradient
            v[:] = BETAS[1] * v + (1 - BETAS[1]) * gradient**2
            m_hat, v_hat = m / (1 - BETAS[0] ** (step + 1)), v / (1 - BETAS[1] ** (step + 1))
            slopes[k] = np.clip(slope + lr * m_hat / (np.sqrt(v_hat) + EPS), 0.0, 1.0)  # ascent: a higher bound
    return result


def _gradients(bounder, layers, slopes, arriving, coefficients) -> list[np.ndarray]:
    """d(bound)/d(slope) per ReLU layer, (B, R, width): the relaxed network run forward per row from the box
    corner that minimises the row's input coefficients, each ReLU taking the line its coefficient chose."""
    lo, hi = layers.box
    value = np.where(coefficients >= 0, lo[:, None, :], hi[:, None, :])  # (B, R, n)
    gradients = []
    for k, (slope, (_, upper_slope, upper_bias), A) in enumerate(zip(slopes, layers.relaxations, arriving)):
        flat = value.reshape(-1, value.shape[-1])
        z = (apply(bounder.W[k], flat) + bounder.b[k]).reshape(*value.shape[:2], -1)
        gradients.append(np.maximum(A, 0) * z)
        value = np.where(A >= 0, slope * z, upper_slope[:, None, :] * z + upper_bias[:, None, :])
    return gradients
