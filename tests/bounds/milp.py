"""Exact output ranges of small dense ReLU networks by mixed-integer programming (HiGHS via scipy).

The big-M constants come from our own interval arithmetic in numpy, widened generously (any valid bounds
give an exact encoding), so the reference does not depend on the code under test.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from certprune.network import Network


def dense_chain(network: Network) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) of Dense, ReLU, Dense, ..., Dense; other layouts are not what this reference encodes."""
    kinds = [layer.kind for layer in network.layers]
    if kinds != ["dense", "relu"] * (len(kinds) // 2) + ["dense"]:
        raise ValueError(f"not a plain dense chain: {kinds}")
    return [(layer.weight.double().numpy(), layer.bias.double().numpy()) for layer in network.layers[::2]]


def _interval_bounds(chain, lo, hi, splits):
    bounds = []
    for k, (W, b) in enumerate(chain[:-1]):
        center, radius = W @ ((lo + hi) / 2) + b, np.abs(W) @ ((hi - lo) / 2)
        pad = 1e-6 * (1 + np.abs(center) + radius)
        l, u = center - radius - pad, center + radius + pad
        if splits is not None and splits[k] is not None:
            l = np.where(splits[k] > 0, np.maximum(l, 0), l)
            u = np.where(splits[k] < 0, np.minimum(u, 0), u)
        bounds.append((l, u))
        lo, hi = np.maximum(l, 0), np.maximum(u, 0)
    return bounds


def exact_minimum(chain, lo: np.ndarray, hi: np.ndarray, c: np.ndarray, splits=None, subject_to=None):
    """min of c @ network(x) over the box (and the split constraints, and ``subject_to`` = (A, b): the
    outputs y with A y <= b): (value, argmin x), or None if empty."""
    bounds = _interval_bounds(chain, lo, hi, splits)
    n0 = lo.size
    sizes = [len(b) for _, b in chain[:-1]]
    offsets = np.cumsum([n0] + [3 * n for n in sizes])
    n_var = int(offsets[-1])
    var_lo, var_hi = np.zeros(n_var), np.zeros(n_var)
    integrality = np.zeros(n_var)
    var_lo[:n0], var_hi[:n0] = lo, hi
    rows, row_lo, row_hi = [], [], []

    def row(entries, low, high):
        r = np.zeros(n_var)
        for index, value in entries:
            r[index] += value
        rows.append(r), row_lo.append(low), row_hi.append(high)

    previous = np.arange(n0)
    for k, ((W, b), (l, u), n) in enumerate(zip(chain, bounds, sizes)):
        z, y, d = (offsets[k] + np.arange(n) + j * n for j in range(3))
        var_lo[z], var_hi[z] = l, u
        var_lo[y], var_hi[y] = 0, np.maximum(u, 0)
        integrality[d], var_hi[d] = 1, 1
        var_lo[d] = (l >= 0).astype(float)
        var_hi[d] = (u > 0).astype(float)
        for j in range(n):
            # z = W y_prev + b;  y >= z;  y <= z - l (1 - d);  y <= u d
            row([(z[j], 1.0)] + [(p, -w) for p, w in zip(previous, W[j])], b[j], b[j])
            row([(y[j], 1.0), (z[j], -1.0)], 0.0, np.inf)
            row([(y[j], 1.0), (z[j], -1.0), (d[j], -l[j])], -np.inf, -l[j])
            row([(y[j], 1.0), (d[j], -max(u[j], 0.0))], -np.inf, 0.0)
        previous = y
    W, b = chain[-1]
    if subject_to is not None:
        A_out, b_out = (np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in subject_to)
        for a, limit in zip(A_out, b_out.ravel()):
            row([(p, w) for p, w in zip(previous, a @ W)], -np.inf, limit - a @ b)
    cost = np.zeros(n_var)
    cost[previous] = c @ W
    result = milp(cost, integrality=integrality, bounds=Bounds(var_lo, var_hi),
                  constraints=LinearConstraint(np.array(rows), row_lo, row_hi) if rows else (),
                  options={"mip_rel_gap": 1e-10, "presolve": True})
    if result.status == 2:
        return None
    assert result.status == 0, result.message
    return float(result.fun + c @ b), np.clip(result.x[:n0], lo, hi)
