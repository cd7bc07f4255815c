"""Deciding a twin box exactly with Z3 (the Fairify-style engine) or with the MILP, relaxed then strict.

Both solvers answer "is there an allowed pair in the box for which some open case holds?". They are asked
first with every case row relaxed by its float margin (``row >= -margin``): ``unsat`` then certifies the box
soundly for the float32 model. A ``sat`` pair is replayed on the ONNX model; if the replay disagrees (the
pair sits within the margin of the threshold), they are asked again with the rows tightened
(``row >= +margin``) and that pair is replayed; ``unsat`` there leaves the box undecided (the MILP says
``margin``: only pairs within the margin remain, which smaller boxes, down to single replayed pairs, settle).

Z3 sees the twin with integer attributes as ``Int``, the protected values as variables constrained to their
compared values and to differ, and ``x'``'s relaxed values kept in range; only unstable neurons get If-terms.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import z3

from certprune.fairness.problem import FairnessProblem
from certprune.fairness.replay import Referee
from certprune.fairness.twin import prune
from certprune.smt.milp import solve_milp
from certprune.smt.z3_encode import encode, rational, solve, value_of


@dataclass
class ExactAnswer:
    """'unsat' (certified), 'sat' (with a replayed counterexample), 'unknown' or 'timeout'."""

    status: str
    counterexample: dict | None = None
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


def decide_z3(problem: FairnessProblem, referee: Referee, lo: np.ndarray, hi: np.ndarray, cases: np.ndarray,
              deadline: float, bounds=None) -> ExactAnswer:
    """Z3 on one twin box for the cases marked in ``cases``; ``bounds`` ((name, Bounds) list on the box) are
    computed when not given."""
    started = time.perf_counter()
    bounds = bounds or problem.bounds(lo, hi)
    if problem.settings.prune:
        pruned = prune(problem.twin64, bounds)
        network, states, hints = pruned.network, pruned.states, list(zip(pruned.pre_lower, pruned.pre_upper))
        details = {"pruning": pruned.stats}
    else:
        network, states, hints, details = problem.twin64, None, None, {"pruning": None}
    error = problem.float_error(lo, hi, bounds[-1][1])[0]
    z = [z3.Int(f"z{j}") if problem.integer[j] else z3.Real(f"z{j}") for j in range(len(lo))]
    encoding = encode(network, z, states=states, pre_bounds=[(a[0], b[0]) for a, b in hints] if hints else None)
    details["unstable"] = encoding.unstable
    base = _domain(problem, z, lo, hi) + list(encoding.constraints)
    for strict in (False, True):
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return ExactAnswer("timeout", None, time.perf_counter() - started, details)
        goal = _cases(problem, encoding.outputs, cases, error, strict)
        result = solve(base + [goal], remaining)
        if result.status != "sat":
            status = "unknown" if strict and result.status == "unsat" else result.status
            return ExactAnswer(status, None, time.perf_counter() - started, details)
        point = np.array([float(value_of(result.model, v)) for v in z])
        found = referee.confirm(point, lo, hi, "z3")
        if found is not None:
            return ExactAnswer("sat", found, time.perf_counter() - started, details)
    return ExactAnswer("unknown", None, time.perf_counter() - started, details)


def _domain(problem: FairnessProblem, z: list, lo: np.ndarray, hi: np.ndarray) -> list:
    """The box, the protected values (listed, and differing), and x' in range on relaxed attributes."""
    out = []
    for j, v in enumerate(z):
        out += [v >= _const(lo[j], problem.integer[j]), v <= _const(hi[j], problem.integer[j])]
    lay = problem.layout
    differ = []
    for k, values in enumerate(problem.prop.protected.values()):
        p1, p2 = z[lay.p_slot(0) + k], z[lay.p_slot(1) + k]
        for p in (p1, p2):
            out.append(z3.Or(*[p == _const(v, z3.is_int(p)) for v in values]))
        differ.append(p1 != p2)
    out.append(z3.Or(*differ))
    for k, i in enumerate(lay.relaxed):
        r, d = z[lay.shared_slot(i)], z[lay.delta_slot + k]
        d_lo, d_hi = problem.domain(i)
        out += [r + d >= _const(d_lo, z3.is_int(r)), r + d <= _const(d_hi, z3.is_int(r))]
    return out


def _cases(problem: FairnessProblem, Y: tuple, cases: np.ndarray, error: np.ndarray, strict: bool):
    """Some open case holds: all its rows >= -margin (relaxed) or >= +margin (strict)."""
    options = []
    for index in np.flatnonzero(cases):
        w = problem.table.witness[index]
        margin = problem.margins(w.A, w.a0, error[None])[0]
        rows = []
        for a, a0, m in zip(w.A, w.a0, margin):
            value = z3.Sum(*[rational(c) * Y[j] for j, c in enumerate(a) if c != 0]) + rational(a0)
            rows.append(value >= rational(m if strict else -m))
        options.append(z3.And(*rows))
    return z3.Or(*options) if options else z3.BoolVal(False)


def _const(value: float, integer: bool):
    return z3.IntVal(int(value)) if integer else rational(value)


# ---------------------------------------------------------------------------------------------------


def decide_milp(problem: FairnessProblem, referee: Referee, lo: np.ndarray, hi: np.ndarray, case: int,
                bounds, deadline: float) -> ExactAnswer:
    """The exact MILP (HiGHS, integer inputs) for one case on one box whose relaxed attributes stay in
    range (no straddling) and whose protected values are fixed; ``bounds`` is the box's Bounds (B = 1)."""
    started = time.perf_counter()
    w = problem.table.witness[case]
    margin = problem.margins(w.A, w.a0, problem.float_error(lo, hi, bounds))[0]
    pre = [(bounds.pre_lower[i][0], bounds.pre_upper[i][0]) for i in range(len(bounds.pre_lower))]
    for strict in (False, True):
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return ExactAnswer("timeout", None, time.perf_counter() - started)
        b = w.a0 - margin if strict else w.a0 + margin  # -(A Y + a0) <= margin  <=>  rows >= -margin
        result = solve_milp(problem.twin64, lo, hi, pre, -w.A, b, remaining, integer_inputs=problem.integer)
        status = result.status.value
        if status != "sat":
            status = "margin" if strict and status == "unsat" else status  # only pairs within the margin
            return ExactAnswer(status, None, time.perf_counter() - started)
        found = referee.confirm(np.asarray(result.x, dtype=np.float64), lo, hi, "milp")
        if found is not None:
            return ExactAnswer("sat", found, time.perf_counter() - started)
    return ExactAnswer("unknown", None, time.perf_counter() - started)
