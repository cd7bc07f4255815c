"""An exact mixed-integer encoding of a ReLU network on a box, solved by HiGHS (through scipy.optimize.milp).

Encoding (float64). Every layer's value is kept as an affine expression ``S @ v + c`` of the solver
variables ``v``: the inputs, then one output variable and one binary per *unstable* ReLU. Dense, Conv2d
(expanded into its sparse matrix) and Affine layers transform the expression; in a graph, Add sums the
expressions of its two inputs and Flatten/Reshape/Transpose/Pad/Concat pick entries of theirs. A max pool
gets the exact big-M form (one binary per window entry, unless interval bounds decide the window). A ReLU
with pre-activation bounds ``[l, u]`` is encoded as
  * ``u <= 0``: output 0, and the row ``expr <= u``;
  * ``l >= 0``: output ``expr``, and the row ``expr >= l`` (no new variable);
  * ``l < 0 < u``: the big-M form with ``y in [0, u]``, ``d in {0, 1}``:
    ``y >= expr``, ``y <= expr - l (1 - d)``, ``y <= u d``.
The rows make the model exact on the set of inputs where the given bounds hold, so ``pre_bounds`` may
also carry branch-and-bound decisions (a neuron fixed active has ``l = 0``). The bounds must be valid
(sound) for every input of interest: they are widened by ``BOUND_SLACK`` (relative and absolute) to
absorb float32 rounding in whatever computed them.

Soundness of the answers. A floating-point solver's "infeasible" is not a proof on its own (with tight
feasibility tolerances HiGHS has called feasible models infeasible), so the question is asked as an
optimisation whose answer carries its own evidence:

    minimise t  subject to  A_i @ net(x) - (b_i + clearance_i) <= t  for every row i,  -depth <= t <= cap.

  * ``sat`` is never taken from the solver's word: its ``x`` is clipped to the box, rounded to float32
    (inward, so it stays inside the box), and reported only if the network run forward in float64 AND
    in float32 meets ``A @ y <= b`` exactly. Minimising ``t`` asks for the point deepest inside the set
    (up to ``depth``), so that rounding is least likely to push it out.
  * ``unsat`` needs three things: HiGHS ends *optimal* with a dual bound on ``t`` strictly above 0, or
    *infeasible* (no x comes within ``cap`` of the rows, or the encoding itself is empty, e.g. contradictory
    split decisions: the cap keeps far-off questions as cheap as feasibility, and a point the solver
    misses must be missed by more than the cap); the clearance
    covers the solver's tolerances (``MARGIN``, and ``SOLVER_TOLERANCE`` propagated through ``|W|`` as
    the error its rows may hide) and the float32 model's own rounding (the caller's ``slack``, see
    ``certprune.bounds.rounding``); and a second, independent opinion agrees: exact rational arithmetic
    (Z3) on small problems, HiGHS again with other settings (no presolve, another seed) otherwise.
  * Any other solver status (time or iteration limit, numerical trouble) decides nothing: ``timeout`` or
    ``unknown``, with the reason.
``optimize`` reports ``c @ net(x)`` at the best point found, evaluated by the float64 forward pass (a
value some input attains), and HiGHS's dual bound loosened by ``OBJECTIVE_SLACK`` as the proven bound.
"""
from __future__ import annotations

import contextlib
import enum
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, replace
from typing import NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, LinearConstraint, milp

from certprune.floats import float32_box
from certprune.network import MOVES, Affine, Conv2d, Dense, Network, ReLU, gather_index, pool_windows

MARGIN = 1e-6  # every row's clearance includes MARGIN * (1 + |b|): the solver's optimality tolerance
SOLVER_TOLERANCE = 1e-7  # HiGHS's primal feasibility tolerance (its default), propagated into the clearance
TOLERANCE_SAFETY = 2.0
DEPTH = 1e-3  # t stops at -(DEPTH * (1 + max |b|) + 2 * clearance): deep enough for float32 to agree
CAP = 1e-3  # t is at most CAP * (1 + max |b|) + clearance: a point missed by less is not "infeasible"
BOUND_SLACK = 1e-6  # pre-activation bounds are widened by BOUND_SLACK * (1 + |bound|)
OBJECTIVE_SLACK = 1e-6  # a proven optimum bound is loosened by OBJECTIVE_SLACK * (1 + |bound|)
HIGHS_OPTIONS = {"mip_rel_gap": 0.0, "random_seed": 0}  # HiGHS's default (tested) feasibility tolerances
SECOND_OPINION = {"mip_rel_gap": 0.0, "random_seed": 1, "presolve": False}
Z3_CHECK_UNSTABLE = 6  # an unsat on at most this many unstable neurons and Z3_CHECK_INPUTS inputs is
Z3_CHECK_INPUTS = 16  # re-checked in exact rational arithmetic; larger ones by HiGHS with other settings
CONV_CHUNK = 512  # unit inputs pushed through a convolution at once when building its matrix


class MilpStatus(str, enum.Enum):
    SAT = "sat"
    UNSAT = "unsat"
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"


@dataclass(frozen=True, eq=False)
class MilpResult:
    """``x`` (float32, the network's per-sample input shape) is set only for a confirmed ``sat``;
    ``reason`` says why an answer other than sat/unsat decided nothing, and who proved an unsat.
    ``point`` (float64, clipped to the box) is the solver's point when it was not confirmed: no
    counterexample, but a place where a falsifier may start."""

    status: MilpStatus
    x: np.ndarray | None = None
    seconds: float = 0.0
    reason: str = ""
    point: np.ndarray | None = None


class Optimum(NamedTuple):
    """``value = c @ net(x)`` at the best point found (float64 forward pass), and a proven bound on the
    optimum (a lower bound when minimising, an upper bound when maximising); value and x are None when
    no point was found in time."""

    value: float | None
    x: np.ndarray | None
    proven_bound: float


PreBounds = Sequence[tuple[object, object]]


def solve_milp(network: Network, lower, upper, pre_bounds: PreBounds, A, b, time_limit: float | None = None,
               integer_inputs=None, slack=0.0) -> MilpResult:
    """Is there an x in [lower, upper] (per-sample shape, unbatched) with ``A @ net(x) <= b``?

    ``pre_bounds``: per ReLU layer, (lower, upper) arrays or tensors shaped like its input (a leading
    batch dimension of 1 is accepted). ``integer_inputs``: optional boolean mask of input coordinates
    restricted to integers. ``slack`` (per row, >= 0) widens the question to ``A @ net(x) <= b + slack``
    for the exact network: with ``slack >= |A| @ forward_error`` an ``unsat`` also proves the float32 model.
    """
    started = time.perf_counter()
    deadline = math.inf if time_limit is None else started + time_limit
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    b = np.asarray(b, dtype=np.float64).ravel()
    slack = np.broadcast_to(np.asarray(slack, dtype=np.float64).ravel(), b.shape)
    model = _Encoding.build(network, lower, upper, pre_bounds, integer_inputs)
    question = _Question.make(model, A, b, slack)
    answer = question.ask(model, deadline, HIGHS_OPTIONS)
    point = None
    if answer.x is not None:
        x = model.confirm(network, answer.x, A, b)
        if x is not None:
            return MilpResult(MilpStatus.SAT, x, time.perf_counter() - started)
        point = model.point(answer.x)
    if answer.status is not MilpStatus.UNSAT:
        return MilpResult(answer.status, seconds=time.perf_counter() - started, reason=answer.reason, point=point)
    second = _second_opinion(network, model, question, deadline)
    if second.status is MilpStatus.SAT:
        return replace(second, seconds=time.perf_counter() - started)
    if second.status is not MilpStatus.UNSAT:
        reason = f"HiGHS proved it, the second opinion did not ({second.reason})"
        return MilpResult(second.status, seconds=time.perf_counter() - started, reason=reason)
    return MilpResult(MilpStatus.UNSAT, seconds=time.perf_counter() - started, reason=f"highs+{second.reason}")


@dataclass(frozen=True)
class _Question:
    """min t subject to ``A @ y - rhs <= t``, ``-depth <= t <= cap``: t > 0 everywhere (or no t at all)
    proves that no x meets A y <= b.

    ``rhs = b + slack + MARGIN (1 + |b|) + the solver tolerance's reach``: a proof holds with that clearance.
    """

    A: np.ndarray
    b: np.ndarray
    rhs: np.ndarray
    depth: float
    cap: float

    @classmethod
    def make(cls, model: "_Encoding", A: np.ndarray, b: np.ndarray, slack: np.ndarray) -> "_Question":
        if A.shape[1] != model.out_S.shape[0]:
            raise ValueError(f"A has {A.shape[1]} columns, the network has {model.out_S.shape[0]} outputs")
        clearance = slack + MARGIN * (1 + np.abs(b)) + TOLERANCE_SAFETY * (np.abs(A) @ model.tolerance_error)
        scale, reach = 1 + float(np.abs(b).max(initial=0.0)), float(clearance.max(initial=0.0))
        return cls(A, b, b + clearance, DEPTH * scale + 2 * reach, CAP * scale + reach)

    def ask(self, model: "_Encoding", deadline: float, options: dict) -> "_Answer":
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return _Answer(MilpStatus.TIMEOUT, None, "no time left")
        res = model.solve_violation(self.A, self.rhs, (-self.depth, self.cap),
                                    None if math.isinf(remaining) else remaining, options)
        x = None if res.x is None else res.x[:-1]
        if res.status == 2:  # no point within the cap, or an empty encoding
            return _Answer(MilpStatus.UNSAT, None, "infeasible")
        if res.status == 1:
            return _Answer(MilpStatus.TIMEOUT, x, "solver time limit")
        if res.status != 0 or res.x is None:
            return _Answer(MilpStatus.UNKNOWN, x, f"solver status {res.status}: {res.message}")
        dual = res.get("mip_dual_bound")
        dual = res.fun if dual is None or not np.isfinite(dual) else dual
        if dual > 0:
            return _Answer(MilpStatus.UNSAT, x, f"dual bound {dual:.3g} > 0")
        return _Answer(MilpStatus.UNKNOWN, x, f"the solver's point (violation {res.fun:.3g}) does not meet "
                                              "the constraints in float32")


class _Answer(NamedTuple):
    status: MilpStatus
    x: np.ndarray | None
    reason: str


def _second_opinion(network: Network, model: "_Encoding", question: _Question, deadline: float) -> MilpResult:
    """An independent check of an unsat: Z3 in exact arithmetic when the problem is small, else HiGHS with
    other settings. A point either finds is confirmed like any other (it may be a real counterexample)."""
    if model.binaries <= Z3_CHECK_UNSTABLE and model.lower.size <= Z3_CHECK_INPUTS and model.z3_encodable(network):
        status, point = _z3_check(network, model, question.A, question.rhs, deadline)
        who = "z3"
        if point is not None and model.confirm(network, point, question.A, question.b) is None:
            # Z3 stops at any point of the relaxed set, often on its edge: ask for one deep inside
            point = _z3_check(network, model, question.A, question.b - question.depth / 2, deadline)[1]
    else:
        answer = question.ask(model, deadline, SECOND_OPINION)
        status, point, who = answer.status, answer.x, f"highs-again ({answer.reason})"
    if point is not None:
        x = model.confirm(network, point, question.A, question.b)
        if x is not None:
            return MilpResult(MilpStatus.SAT, x, reason=f"found by {who}")
    if status is MilpStatus.UNSAT:
        return MilpResult(MilpStatus.UNSAT, reason=who)
    return MilpResult(MilpStatus.UNKNOWN if status is MilpStatus.SAT else status, reason=f"{who}: {status.value}")


def _z3_check(network: Network, model: "_Encoding", A: np.ndarray, rhs: np.ndarray, deadline: float):
    """Is there x with ``A @ net(x) <= rhs`` on the MILP's own set (the box, and every neuron's widened bounds
    as rows), in exact rational arithmetic? Returns (status, float64 point or None)."""
    import z3

    from certprune.smt.z3_encode import encode, rational, solve, value_of

    integer = model.integrality[0].astype(bool)
    z = [z3.Int(f"x{j}") if integer[j] else z3.Real(f"x{j}") for j in range(model.lower.size)]
    box = []
    for j, v in enumerate(z):
        lo, hi = (z3.IntVal(math.ceil(model.lower[j])), z3.IntVal(math.floor(model.upper[j]))) if integer[j] \
            else (rational(model.lower[j]), rational(model.upper[j]))
        box += [v >= lo, v <= hi]
    states = [np.where(u <= 0, -1, np.where(l >= 0, 1, 0)) for l, u in model.raw_bounds]
    encoding = encode(network, z, states=states, pre_bounds=model.widened_bounds)
    rows = [z3.Sum(*[rational(a) * y for a, y in zip(row, encoding.outputs) if a != 0], rational(0.0))
            <= rational(r) for row, r in zip(A, rhs)]
    result = solve(box + list(encoding.constraints) + rows, max(deadline - time.perf_counter(), 1e-3)
                   if math.isfinite(deadline) else None)
    status = {"sat": MilpStatus.SAT, "unsat": MilpStatus.UNSAT, "timeout": MilpStatus.TIMEOUT}.get(
        result.status, MilpStatus.UNKNOWN)
    point = None
    if result.status == "sat":
        point = np.array([float(value_of(result.model, v)) for v in z])
    return status, point


def optimize(network: Network, lower, upper, pre_bounds: PreBounds, c, sense: str = "min",
             time_limit: float | None = None, integer_inputs=None) -> Optimum:
    """The exact optimum of ``c @ net(x)`` over the box (see ``solve_milp`` for the arguments)."""
    if sense not in ("min", "max"):
        raise ValueError(f"sense must be 'min' or 'max', got {sense!r}")
    sign = 1.0 if sense == "min" else -1.0
    c = np.asarray(c, dtype=np.float64).ravel()
    model = _Encoding.build(network, lower, upper, pre_bounds, integer_inputs)
    objective = sign * (model.out_S.T @ c)
    offset = sign * float(c @ model.out_c)
    res = model.solve(objective, time_limit, HIGHS_OPTIONS)
    if res.status == 2:  # no input meets the integrality or the bounds: the optimum of an empty set
        return Optimum(None, None, sign * math.inf)
    dual = res.get("mip_dual_bound")
    if dual is None or not np.isfinite(dual):
        dual = res.fun if res.status == 0 and res.fun is not None else -math.inf
    bound = dual + offset
    bound = sign * (bound - OBJECTIVE_SLACK * (1 + abs(bound)))  # loosened by the solver's tolerance
    if res.x is None:
        return Optimum(None, None, bound)
    x = model.point(res.x)
    with torch.no_grad():
        y = network.to(torch.float64).forward(torch.from_numpy(x)[None])[0].numpy()
    return Optimum(float(c @ y.ravel()), x, bound)


# ---------------------------------------------------------------------------------------------------


class _Encoding:
    """Bounds, integrality and rows of the MILP, and the network output as an expression."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, integer: np.ndarray, input_shape) -> None:
        self.input_shape = tuple(input_shape)
        self.lower, self.upper = lower, upper
        self.lb, self.ub, self.integrality = [lower], [upper], [integer.astype(np.int8)]
        self.n_vars = lower.size
        self.rows: list[tuple[sp.csr_matrix, np.ndarray, np.ndarray]] = []
        self.raw_bounds: list[tuple[np.ndarray, np.ndarray]] = []  # per ReLU layer, as given
        self.widened_bounds: list[tuple[np.ndarray, np.ndarray]] = []  # per ReLU layer, as encoded
        self.binaries = 0
        # per value of the current layer: how far a solution within the solver's tolerances may put it
        self.tolerance_error = np.full(lower.size, SOLVER_TOLERANCE)
        self.out_S: sp.csr_matrix
        self.out_c: np.ndarray

    @classmethod
    def build(cls, network: Network, lower, upper, pre_bounds: PreBounds, integer_inputs) -> "_Encoding":
        lower, upper = _flat(lower), _flat(upper)
        n = math.prod(network.input_shape)
        if lower.size != n or upper.size != n:
            raise ValueError(f"box has {lower.size} coordinates, the network input {network.input_shape} has {n}")
        if np.any(lower > upper):
            raise ValueError("box lower bound exceeds upper bound")
        integer = np.zeros(n, dtype=bool) if integer_inputs is None else _flat(integer_inputs).astype(bool)
        if integer.size != n:
            raise ValueError(f"integer_inputs has {integer.size} entries, the input has {n}")
        relus = sum(isinstance(layer, ReLU) for layer in network.layers)
        if len(pre_bounds) != relus:
            raise ValueError(f"pre_bounds has {len(pre_bounds)} entries, the network has {relus} ReLU layers")
        model = cls(lower, upper, integer, network.input_shape)
        bounds = iter(pre_bounds)
        shapes = network.shapes()
        # Per value: its flat entries as S @ variables + c, and how far the solver's tolerances may move them.
        values = [(sp.identity(n, format="csr"), np.zeros(n), model.tolerance_error)]
        for layer, sources in zip(network.layers, network.inputs):
            ins = [values[j + 1] for j in sources]
            if isinstance(layer, ReLU):
                values.append(model.relu(*ins[0], *next(bounds)))
            elif layer.kind == "maxpool":
                values.append(model.maxpool(layer, shapes[sources[0] + 1], *ins[0]))
            elif layer.kind in MOVES:
                values.append(model.move(gather_index(layer, *(shapes[j + 1] for j in sources)), ins))
            elif layer.kind == "add":
                (Sa, ca, ta), (Sb, cb, tb) = ins
                values.append((model.pad(Sa) + model.pad(Sb), ca + cb, ta + tb))
            else:
                S, c, tol = ins[0]
                M, shift = _linear_map(layer, shapes[sources[0] + 1])
                values.append(((M @ S).tocsr(), M @ c + shift, abs(M) @ tol))
        S, c, model.tolerance_error = values[-1]
        model.out_S, model.out_c = model.pad(S), c
        return model

    def move(self, index: np.ndarray, ins: list) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """Entries picked from the inputs' entries (concatenated) by ``index``; -1 picks a zero."""
        S = sp.vstack([self.pad(S) for S, _, _ in ins] + [sp.csr_matrix((1, self.n_vars))]).tocsr()
        c = np.concatenate([c for _, c, _ in ins] + [np.zeros(1)])
        tol = np.concatenate([t for _, _, t in ins] + [np.zeros(1)])
        return S[index], c[index], tol[index]

    def interval(self, S: sp.csr_matrix, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of S @ variables + c over the variables' bounds."""
        S = self.pad(S)
        lb, ub = np.concatenate(self.lb), np.concatenate(self.ub)
        positive, negative = S.maximum(0), S.minimum(0)
        return positive @ lb + negative @ ub + c, positive @ ub + negative @ lb + c

    def maxpool(self, layer, shape, S: sp.csr_matrix, c: np.ndarray, tol: np.ndarray):
        """y = max of each window, exactly: y >= every input, y <= the input its binary selects (big-M from
        interval bounds); a window whose largest lower bound beats every other upper bound is that input."""
        lo, hi = self.interval(S, c)
        windows = pool_windows(layer, shape)  # (N_out, K), -1 for padding
        n_out = windows.shape[0]
        rows_S, rows_c, rows_tol = [], [], []
        S = self.pad(S)
        for o in range(n_out):
            window = windows[o][windows[o] >= 0]
            best = window[np.argmax(lo[window])]
            others = window[window != best]
            if others.size == 0 or lo[best] >= hi[others].max():
                rows_S.append(S[best]); rows_c.append(c[best]); rows_tol.append(tol[best])
                continue
            (y,) = self.add_vars(np.array([lo[window].max()]), np.array([hi[window].max()]), integer=False)
            d = self.add_vars(np.zeros(window.size), np.ones(window.size), integer=True)
            self.binaries += window.size
            Y = sp.csr_matrix(([1.0], ([0], [y])), shape=(1, self.n_vars))
            X = self.pad(S[window])
            Ys = sp.vstack([Y] * window.size)
            free = np.full(window.size, -np.inf)
            self.rows.append((X - Ys, free, -c[window]))  # y >= x_j
            big = hi[window].max() - lo[window]
            D = sp.csr_matrix((big, (np.arange(window.size), d)), shape=(window.size, self.n_vars))
            self.rows.append((Ys - X + D, free, c[window] + big))  # y <= x_j + big_j (1 - d_j)
            self.rows.append((sp.csr_matrix((np.ones(window.size), (np.zeros(window.size, int), d)),
                                            shape=(1, self.n_vars)), np.ones(1), np.ones(1)))  # one d_j is 1
            rows_S.append(Y); rows_c.append(0.0)
            rows_tol.append(tol[window].max() + SOLVER_TOLERANCE * (1 + np.abs(big).max()))
        return sp.vstack([self.pad(r) for r in rows_S]).tocsr(), np.array(rows_c, dtype=np.float64), np.array(rows_tol)

    def add_vars(self, lb: np.ndarray, ub: np.ndarray, integer: bool) -> np.ndarray:
        index = np.arange(self.n_vars, self.n_vars + lb.size)
        self.lb.append(lb)
        self.ub.append(ub)
        self.integrality.append(np.full(lb.size, int(integer), dtype=np.int8))
        self.n_vars += lb.size
        return index

    def pad(self, S: sp.spmatrix) -> sp.csr_matrix:
        S = sp.csr_matrix(S)
        S.resize((S.shape[0], self.n_vars))
        return S

    def relu(self, S: sp.csr_matrix, c: np.ndarray, tol: np.ndarray, l, u):
        l, u = _flat(l), _flat(u)
        if l.size != c.size or u.size != c.size:
            raise ValueError(f"pre-activation bounds have {l.size}/{u.size} entries, the layer has {c.size}")
        inactive, active = u <= 0, (l >= 0) & (u > 0)
        unstable = ~inactive & ~active
        wl = l - BOUND_SLACK * (1 + np.abs(l))
        wu = u + BOUND_SLACK * (1 + np.abs(u))
        self.raw_bounds.append((l, u))
        self.widened_bounds.append((wl, wu))
        # a row met only within the tolerance moves y by up to tol (1 + |l| + |u|); inactive outputs are 0
        grow = np.where(unstable, SOLVER_TOLERANCE * (1 + np.abs(wl) + np.abs(wu)), 0.0)
        tol = np.where(inactive, 0.0, tol + grow)
        # stable neurons: keep the input where the bounds say it is
        self.rows.append((S[inactive], np.full(inactive.sum(), -np.inf), wu[inactive] - c[inactive]))
        self.rows.append((S[active], wl[active] - c[active], np.full(active.sum(), np.inf)))
        k = int(unstable.sum())
        self.binaries += k
        Su, cu, lu, uu = S[unstable], c[unstable], wl[unstable], wu[unstable]
        y = self.add_vars(np.zeros(k), uu, integer=False)
        d = self.add_vars(np.zeros(k), np.ones(k), integer=True)
        Su = self.pad(Su)
        Y = sp.csr_matrix((np.ones(k), (np.arange(k), y)), shape=(k, self.n_vars))
        D = sp.csr_matrix((np.ones(k), (np.arange(k), d)), shape=(k, self.n_vars))
        free = np.full(k, -np.inf)
        self.rows.append((Su - Y, free, -cu))                          # y >= expr
        self.rows.append((Y - Su - sp.diags(lu) @ D, free, cu - lu))  # y <= expr - l (1 - d)
        self.rows.append((Y - sp.diags(uu) @ D, free, np.zeros(k)))   # y <= u d
        # the output: expr on active rows, y on unstable rows, 0 on inactive rows
        keep = sp.diags(active.astype(np.float64)) @ self.pad(S)
        pick = sp.csr_matrix((np.ones(k), (np.flatnonzero(unstable), y)), shape=(c.size, self.n_vars))
        return (keep + pick).tocsr(), np.where(active, c, 0.0), tol

    def solve(self, objective: np.ndarray, time_limit: float | None, options: dict,
              extra_rows=(), extra_var: tuple[float, float] | None = None):
        """HiGHS on the encoding plus ``extra_rows`` ((matrix, lo, hi) over the variables and, when
        ``extra_var`` gives its bounds, one more continuous variable appended last)."""
        width = self.n_vars + (extra_var is not None)
        rows = [(self.pad(M), lo, hi) for M, lo, hi in self.rows if M.shape[0]] + list(extra_rows)
        rows = [(_resized(M, width), lo, hi) for M, lo, hi in rows]
        options = dict(options)
        if time_limit is not None:
            options["time_limit"] = max(float(time_limit), 1e-3)
        constraints = []
        if rows:
            constraints = [LinearConstraint(sp.vstack([r[0] for r in rows]).tocsr(),
                                            np.concatenate([r[1] for r in rows]),
                                            np.concatenate([r[2] for r in rows]))]
        lb, ub, integrality = np.concatenate(self.lb), np.concatenate(self.ub), np.concatenate(self.integrality)
        if extra_var is not None:
            lb, ub = np.append(lb, extra_var[0]), np.append(ub, extra_var[1])
            integrality = np.append(integrality, 0)
            objective = np.append(objective, 0.0) if objective.size == self.n_vars else objective
        with warnings.catch_warnings(), solver_output_silenced():
            warnings.filterwarnings("ignore", message="Unrecognized options", category=RuntimeWarning)
            return milp(objective, integrality=integrality, bounds=Bounds(lb, ub), constraints=constraints,
                        options=options)

    def solve_violation(self, A: np.ndarray, rhs: np.ndarray, t_range: tuple[float, float],
                        time_limit: float | None, options: dict):
        """min t subject to ``A @ out - t <= rhs`` and t in ``t_range`` (t is the last variable)."""
        t_column = sp.csr_matrix(-np.ones((len(rhs), 1)))
        rows = sp.hstack([self.pad(sp.csr_matrix(A) @ self.out_S), t_column]).tocsr()
        objective = np.zeros(self.n_vars + 1)
        objective[-1] = 1.0
        return self.solve(objective, time_limit, options, [(rows, np.full(len(rhs), -np.inf), rhs - A @ self.out_c)],
                          extra_var=t_range)

    def z3_encodable(self, network: Network) -> bool:
        return not any(isinstance(layer, Conv2d) for layer in network.layers)

    def point(self, solution: np.ndarray) -> np.ndarray:
        """The solver's input clipped into the box, integer coordinates rounded (float64)."""
        x = np.clip(solution[:self.lower.size], self.lower, self.upper)
        integer = self.integrality[0].astype(bool)
        x[integer] = np.clip(np.round(x[integer]), np.ceil(self.lower[integer]), np.floor(self.upper[integer]))
        return x.reshape(self.input_shape)

    def confirm(self, network: Network, solution: np.ndarray, A: np.ndarray, b: np.ndarray) -> np.ndarray | None:
        """The float32 input that meets ``A @ y <= b`` in float64 and float32 forward passes, or None."""
        lo, hi = float32_box(self.lower, self.upper, outward=False)
        x = np.clip(self.point(solution).ravel().astype(np.float32), lo, hi).reshape(self.input_shape)
        for dtype in (torch.float64, torch.float32):
            with torch.no_grad():
                y = network.to(dtype).forward(torch.from_numpy(x).to(dtype)[None])[0].double().numpy()
            if not np.all(A @ y.ravel() <= b):
                return None
        return x


@contextlib.contextmanager
def solver_output_silenced():
    """File descriptor 1 sent to /dev/null while HiGHS runs: scipy's HiGHS prints debugging lines straight to it
    (e.g. "HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();", 20 times in one fairness
    run), in the middle of certprune's own output and a user's pipes. certprune runs no threads that could print
    meanwhile."""
    sys.stdout.flush()
    saved, sink = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(sink, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(sink)


def _linear_map(layer, shape) -> tuple[sp.csr_matrix, np.ndarray]:
    """The layer as ``flat_out = M @ flat_in + shift``."""
    if isinstance(layer, Dense):
        W = layer.weight.detach().double().numpy()
        return sp.csr_matrix(W), layer.bias.detach().double().numpy()
    if isinstance(layer, Affine):
        scale = layer.scale.detach().double().numpy().ravel()
        return sp.diags(scale, format="csr"), layer.shift.detach().double().numpy().ravel()
    if isinstance(layer, Conv2d):
        return _conv_matrix(layer, shape)
    raise TypeError(f"the MILP encoding has no rule for layer kind {type(layer).__name__}")


def _conv_matrix(layer: Conv2d, shape) -> tuple[sp.csr_matrix, np.ndarray]:
    """Push unit inputs through the convolution (no bias): column j of M is the image of e_j."""
    n = math.prod(shape)
    weight = layer.weight.detach().double()
    columns = []
    for start in range(0, n, CONV_CHUNK):
        k = min(CONV_CHUNK, n - start)
        units = torch.zeros(k, n, dtype=torch.float64)
        units[torch.arange(k), torch.arange(start, start + k)] = 1.0
        out = F.conv2d(units.view(k, *shape), weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        columns.append(sp.csr_matrix(out.reshape(k, -1).numpy().T))
    out_shape = layer.output_shape(tuple(shape))
    shift = np.repeat(layer.bias.detach().double().numpy(), out_shape[1] * out_shape[2])
    return sp.hstack(columns).tocsr(), shift


def _resized(M: sp.spmatrix, width: int) -> sp.csr_matrix:
    M = sp.csr_matrix(M)
    if M.shape[1] != width:
        M.resize((M.shape[0], width))
    return M


def _flat(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64).ravel().copy()
