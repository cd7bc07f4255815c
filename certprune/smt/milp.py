"""An exact mixed-integer encoding of a ReLU network on a box, solved by HiGHS (through scipy.optimize.milp).

Encoding (float64). Every layer's value is kept as an affine expression ``S @ v + c`` of the solver
variables ``v``: the inputs, then one output variable and one binary per *unstable* ReLU. Dense, Conv2d
(expanded into its sparse matrix), Flatten and Affine layers just transform the expression. A ReLU
with pre-activation bounds ``[l, u]`` is encoded as
  * ``u <= 0``: output 0, and the row ``expr <= u``;
  * ``l >= 0``: output ``expr``, and the row ``expr >= l`` (no new variable);
  * ``l < 0 < u``: the big-M form with ``y in [0, u]``, ``d in {0, 1}``:
    ``y >= expr``, ``y <= expr - l (1 - d)``, ``y <= u d``.
The rows make the model exact on the set of inputs where the given bounds hold, so ``pre_bounds`` may
also carry branch-and-bound decisions (a neuron fixed active has ``l = 0``). The bounds must be valid
(sound) for every input of interest: they are widened by ``BOUND_SLACK`` (relative and absolute) to
absorb float32 rounding in whatever computed them.

Soundness of the answers.
  * ``sat`` is never taken from the solver's word: its ``x`` is clipped to the box, rounded to float32
    (inward, so it stays inside the box), and reported only if the network run forward in float64 AND
    in float32 meets ``A @ y <= b`` exactly. A solver point that fails the check is retried once with
    the constraint tightened by ``TIGHTEN``; if that fails too the answer is ``unknown``.
  * ``unsat`` relies on HiGHS and its tolerances, which are tightened (``mip_rel_gap = 0``, primal and
    integrality feasibility ``1e-9``). Feasibility is asked of the *relaxed* constraint
    ``A @ y <= b + MARGIN + slack``, so ``unsat`` means no input comes within that of satisfying the
    conjunction in exact arithmetic. The float32 model can stray further than ``MARGIN`` from the exact
    one (``certprune.bounds.rounding``): callers pass that error as ``slack``.
  * ``timeout`` (or a solver failure, reported as ``unknown``) decides nothing.
``optimize`` reports ``c @ net(x)`` at the best point found, evaluated by the float64 forward pass (a
value some input attains), and HiGHS's dual bound loosened by ``OBJECTIVE_SLACK`` as the proven bound.
"""
from __future__ import annotations

import enum
import math
import time
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, LinearConstraint, milp

from certprune.floats import float32_box
from certprune.network import Affine, Conv2d, Dense, Flatten, Network, ReLU

MARGIN = 1e-6  # the feasibility question is A @ y <= b + MARGIN
TIGHTEN = 1e-5  # the retry after an unconfirmed point asks A @ y <= b - TIGHTEN
BOUND_SLACK = 1e-6  # pre-activation bounds are widened by BOUND_SLACK * (1 + |bound|)
OBJECTIVE_SLACK = 1e-6  # a proven optimum bound is loosened by OBJECTIVE_SLACK * (1 + |bound|)
HIGHS_OPTIONS = {
    "mip_rel_gap": 0.0,
    "mip_abs_gap": 1e-9,
    "primal_feasibility_tolerance": 1e-9,
    "mip_feasibility_tolerance": 1e-9,
    "random_seed": 0,
}
CONV_CHUNK = 512  # unit inputs pushed through a convolution at once when building its matrix


class MilpStatus(str, enum.Enum):
    SAT = "sat"
    UNSAT = "unsat"
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"


@dataclass(frozen=True, eq=False)
class MilpResult:
    """``x`` (float32, the network's per-sample input shape) is set only for a confirmed ``sat``."""

    status: MilpStatus
    x: np.ndarray | None = None
    seconds: float = 0.0


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
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    b = np.asarray(b, dtype=np.float64).ravel()
    slack = np.broadcast_to(np.asarray(slack, dtype=np.float64).ravel(), b.shape)
    model = _Encoding.build(network, lower, upper, pre_bounds, integer_inputs)
    for attempt, rhs in enumerate((b + MARGIN + slack, b - TIGHTEN * (1 + np.abs(b)))):
        remaining = None if time_limit is None else time_limit - (time.perf_counter() - started)
        if remaining is not None and remaining <= 0:
            return MilpResult(MilpStatus.TIMEOUT, seconds=time.perf_counter() - started)
        res = model.solve(np.zeros(model.n_vars), A, rhs, remaining)
        if res.x is None:
            status = {2: MilpStatus.UNSAT, 1: MilpStatus.TIMEOUT}.get(res.status, MilpStatus.UNKNOWN)
            if attempt == 1 and status is MilpStatus.UNSAT:
                status = MilpStatus.UNKNOWN  # a point within MARGIN exists, but none strictly inside
            return MilpResult(status, seconds=time.perf_counter() - started)
        x = model.confirm(network, res.x, A, b)
        if x is not None:
            return MilpResult(MilpStatus.SAT, x, time.perf_counter() - started)
    return MilpResult(MilpStatus.UNKNOWN, seconds=time.perf_counter() - started)


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
    res = model.solve(objective, None, None, time_limit)
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
        S, c = sp.identity(n, format="csr"), np.zeros(n)
        bounds = iter(pre_bounds)
        shapes = network.shapes()
        for layer, shape in zip(network.layers, shapes):
            if isinstance(layer, ReLU):
                S, c = model.relu(S, c, *next(bounds))
            else:
                M, shift = _linear_map(layer, shape)
                if M is not None:
                    S, c = (M @ S).tocsr(), M @ c + shift
        model.out_S, model.out_c = model.pad(S), c
        return model

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

    def relu(self, S: sp.csr_matrix, c: np.ndarray, l, u) -> tuple[sp.csr_matrix, np.ndarray]:
        l, u = _flat(l), _flat(u)
        if l.size != c.size or u.size != c.size:
            raise ValueError(f"pre-activation bounds have {l.size}/{u.size} entries, the layer has {c.size}")
        inactive, active = u <= 0, (l >= 0) & (u > 0)
        unstable = ~inactive & ~active
        wl = l - BOUND_SLACK * (1 + np.abs(l))
        wu = u + BOUND_SLACK * (1 + np.abs(u))
        # stable neurons: keep the input where the bounds say it is
        self.rows.append((S[inactive], np.full(inactive.sum(), -np.inf), wu[inactive] - c[inactive]))
        self.rows.append((S[active], wl[active] - c[active], np.full(active.sum(), np.inf)))
        k = int(unstable.sum())
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
        return (keep + pick).tocsr(), np.where(active, c, 0.0)

    def solve(self, objective: np.ndarray, A: np.ndarray | None, rhs: np.ndarray | None, time_limit):
        rows = [(self.pad(M), lo, hi) for M, lo, hi in self.rows if M.shape[0]]
        if A is not None:
            rows.append((self.pad(sp.csr_matrix(A) @ self.out_S), np.full(len(rhs), -np.inf), rhs - A @ self.out_c))
        options = dict(HIGHS_OPTIONS)
        if time_limit is not None:
            options["time_limit"] = max(float(time_limit), 1e-3)
        constraints = []
        if rows:
            constraints = [LinearConstraint(sp.vstack([r[0] for r in rows]).tocsr(),
                                            np.concatenate([r[1] for r in rows]),
                                            np.concatenate([r[2] for r in rows]))]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Unrecognized options", category=RuntimeWarning)
            return milp(objective, integrality=np.concatenate(self.integrality),
                        bounds=Bounds(np.concatenate(self.lb), np.concatenate(self.ub)),
                        constraints=constraints, options=options)

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


def _linear_map(layer, shape) -> tuple[sp.csr_matrix | None, np.ndarray | None]:
    """The layer as ``flat_out = M @ flat_in + shift``; (None, None) for the identity (Flatten)."""
    if isinstance(layer, Flatten):
        return None, None
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
        out = F.conv2d(units.view(k, *shape), weight, None, layer.stride, layer.padding, layer.dilation)
        columns.append(sp.csr_matrix(out.reshape(k, -1).numpy().T))
    out_shape = layer.output_shape(tuple(shape))
    shift = np.repeat(layer.bias.detach().double().numpy(), out_shape[1] * out_shape[2])
    return sp.hstack(columns).tocsr(), shift


def _flat(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64).ravel().copy()
