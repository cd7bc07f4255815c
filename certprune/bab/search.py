"""Complete verification of one input box against a disjunction of linear output constraints.

The question: is there an ``x`` in ``[lower, upper]`` whose logits ``y`` satisfy some conjunction
``A @ y <= b``? The search tries, in order: an attack (a counterexample ends it), bounds on the whole
box (IBP, CROWN, alpha-CROWN), then branch and bound: input splitting for low-dimensional inputs and
ReLU splitting otherwise, with an exact MILP for leaves with few unstable neurons. A conjunction is
refuted on a region when one of its rows has a lower bound strictly above its right-hand side; the
bounds are already widened for floating-point rounding, so no tie is ever read as a proof.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from certprune.bab.attack import find_counterexample
from certprune.bab.branching import choose_input_dims, choose_relu
from certprune.bounds import CROWN, IBP, AlphaCROWN, Bounds
from certprune.bounds.rounding import forward_error
from certprune.floats import float32_box
from certprune.network import Network
from certprune.smt.milp import solve_milp
from certprune.types import Certificate, Counterexample, Result, Verdict

Constraint = tuple[np.ndarray, np.ndarray]
MILP_FAILURES = 3  # undecided MILP leaves after which a search stops calling the MILP
Replay = Callable[[np.ndarray], bool]


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """How hard to look. Inputs of at most ``input_split_dims`` values are split as boxes, others by ReLUs."""

    timeout: float = 60.0
    batch_size: int = 1024
    attack_restarts: int = 16
    attack_steps: int = 40
    alpha_iterations: int = 20
    input_split_dims: int = 16
    milp_max_unstable: int = 16
    milp_time_limit: float = 20.0
    # ReLU splitting keeps the root's intermediate bounds (beta-CROWN style, cheap per domain) for inputs of
    # more than this many values, and recomputes them under each domain's splits (tighter) otherwise.
    fixed_intermediate_above: int = 100
    max_domains: int = 2_000_000
    seed: int = 0


@dataclass
class _Search:
    """One question and the running state of its search (time, counts, how it was decided)."""

    network: Network
    outer: tuple[torch.Tensor, torch.Tensor]  # the box rounded outward: bounds are computed on it
    inner: tuple[torch.Tensor, torch.Tensor]  # the box rounded inward: counterexamples must lie in it
    constraints: Sequence[Constraint]
    settings: SearchSettings
    replay: Replay | None
    C: torch.Tensor = field(init=False)
    rhs: torch.Tensor = field(init=False)
    groups: list[slice] = field(init=False)
    started: float = field(default_factory=time.perf_counter)
    domains: int = 0
    milp_calls: int = 0
    decided_by: str = ""
    milp_failures: int = 0
    undecided: int = 0
    root: Bounds | None = None  # the tightest bounds of the whole box, computed before branching
    _float_error: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.C, self.rhs, self.groups = stack_constraints(self.constraints)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def out_of_time(self) -> bool:
        return self.elapsed() > self.settings.timeout

    def refuted(self, bounds) -> torch.Tensor:
        return refuted(bounds.output_lower, self.rhs, self.groups) | bounds.infeasible

    def confirm(self, x: torch.Tensor) -> np.ndarray | None:
        """The first candidate (clipped into the inner box) meeting the constraints here and in the replay."""
        x = torch.max(torch.min(x, self.inner[1]), self.inner[0])
        hits = satisfies(self.network, x, self.constraints)
        for index in np.flatnonzero(hits):
            candidate = x[index].numpy()
            if self.replay is None or self.replay(candidate):
                return candidate
        return None

    def counterexample_at(self, x: torch.Tensor) -> bool:
        """Whether one float32 input is a counterexample: by the replay on the original model when there
        is one (it applies the property's own rule, e.g. the model's decision), else by the constraints."""
        x = x.reshape(1, *self.network.input_shape)
        if self.replay is not None:
            return bool(self.replay(x[0].numpy()))
        return bool(satisfies(self.network, x, self.constraints)[0])

    def float_error(self) -> np.ndarray:
        """(n_out,) bound on |float32 logits - exact logits| over the box, computed once."""
        if self._float_error is None:
            outer = tuple(v.unsqueeze(0) for v in self.outer)
            self._float_error = forward_error(self.network, *outer)[0].numpy()
        return self._float_error

    def record(self) -> dict:
        return {"timeout": self.settings.timeout, "decided_by": self.decided_by, "domains": self.domains,
                "milp_calls": self.milp_calls}


def verify_box(network: Network, lower: np.ndarray, upper: np.ndarray, constraints: Sequence[Constraint],
               settings: SearchSettings = SearchSettings(), replay: Replay | None = None) -> Result:
    """Decide one box. ``replay(x)`` must confirm a counterexample on the original model (onnxruntime)."""
    if settings.timeout <= 0:
        raise ValueError("timeout must be positive")
    shape = network.input_shape
    # Bounds run on the box rounded outward to float32 (so they cover every real point of it);
    # candidate counterexamples are clipped to the box rounded inward (so they truly lie in it).
    outer = tuple(torch.as_tensor(v.reshape(shape)) for v in float32_box(lower, upper, outward=True))
    inner = tuple(torch.as_tensor(v.reshape(shape)) for v in float32_box(lower, upper, outward=False))
    search = _Search(network, outer, inner, constraints, settings, replay)
    steps = (_attack, _whole_box, _input_split if outer[0].numel() <= settings.input_split_dims else _relu_split)
    for step in steps:
        verdict, x = step(search)
        if verdict is not None:
            return _result(search, verdict, x)
    raise AssertionError("the branch-and-bound step always decides")


def _result(search: _Search, verdict: Verdict, x: np.ndarray | None) -> Result:
    seconds = search.elapsed()
    if verdict is Verdict.FALSIFIED:
        with torch.no_grad():
            y = search.network(torch.as_tensor(x).reshape(1, *search.network.input_shape))[0].numpy()
        example = Counterexample(np.asarray(x).ravel(), y, replayed=search.replay is not None)
        return Result(verdict, counterexample=example, seconds=seconds, settings=search.record())
    if verdict is Verdict.VERIFIED:
        certificate = Certificate(search.decided_by, {"domains": search.domains, "milp_calls": search.milp_calls})
        return Result(verdict, certificate=certificate, seconds=seconds, settings=search.record())
    return Result(verdict, seconds=seconds, settings=search.record())


# ---- shared pieces -----------------------------------------------------------------------------

def stack_constraints(constraints: Sequence[Constraint]) -> tuple[torch.Tensor, torch.Tensor, list[slice]]:
    """All rows of all conjunctions in one specification matrix, with each conjunction's row slice.

    A conjunction of several rows also gets their sum as an extra row: if ``sum_i A_i y > sum_i b_i``
    everywhere then every point violates some row, and the bound of the sum can be proven where no
    single row's bound can (the rows' relaxations are looser in different places).
    """
    rows, rhs, groups, start = [], [], [], 0
    for A, b in constraints:
        A = np.atleast_2d(np.asarray(A, dtype=np.float64))
        b = np.asarray(b, dtype=np.float64).ravel()
        if len(A) > 1:
            A, b = np.vstack([A, A.sum(axis=0)]), np.append(b, b.sum())
        rows.append(A)
        rhs.append(b)
        groups.append(slice(start, start + len(A)))
        start += len(A)
    return (torch.tensor(np.concatenate(rows), dtype=torch.float32),
            torch.tensor(np.concatenate(rhs), dtype=torch.float32), groups)


def refuted(output_lower: torch.Tensor, rhs: torch.Tensor, groups: list[slice]) -> torch.Tensor:
    """(B,) True where every conjunction has a row whose lower bound is strictly above its bound."""
    gap = output_lower - rhs
    per_group = torch.stack([(gap[:, g] > 0).any(dim=1) for g in groups], dim=1)
    return per_group.all(dim=1)


def satisfies(network: Network, x: torch.Tensor, constraints: Sequence[Constraint]) -> np.ndarray:
    """(B,) True where the network's float32 logits at ``x`` meet some conjunction (checked in float64)."""
    with torch.no_grad():
        y = network(x).double().numpy()
    hit = np.zeros(len(x), dtype=bool)
    for A, b in constraints:
        hit |= np.all(y @ np.atleast_2d(A).T <= np.asarray(b).ravel(), axis=1)
    return hit


# ---- the steps ---------------------------------------------------------------------------------

def _attack(search: _Search):
    lo, hi = search.inner
    s = search.settings
    x = find_counterexample(search.network, lo.numpy(), hi.numpy(), [A for A, _ in search.constraints],
                            [b for _, b in search.constraints], restarts=s.attack_restarts, steps=s.attack_steps,
                            seed=s.seed, time_limit=s.timeout / 4)
    if x is None:
        return None, None
    found = search.confirm(torch.as_tensor(x, dtype=torch.float32).reshape(1, *search.network.input_shape))
    search.decided_by = "attack"
    return (Verdict.FALSIFIED, found) if found is not None else (None, None)


def _whole_box(search: _Search):
    lower, upper = search.outer[0].unsqueeze(0), search.outer[1].unsqueeze(0)
    methods = [IBP(), CROWN()]
    if search.outer[0].numel() > search.settings.input_split_dims:
        # Before ReLU splitting alpha-CROWN pays off; input splitting is cheaper with plain CROWN.
        methods.append(AlphaCROWN(iterations=search.settings.alpha_iterations))
    for method in methods:
        bounds = method.compute(search.network, lower, upper, C=search.C, prior=search.root)
        search.root = bounds
        if bool(search.refuted(bounds)[0]):
            search.decided_by = type(method).__name__
            return Verdict.VERIFIED, None
    return None, None


def _input_split(search: _Search):
    """Bisect boxes along the dimension whose width most moves the bound; CROWN decides the leaves."""
    stack = [(search.outer[0].unsqueeze(0), search.outer[1].unsqueeze(0))]
    crown = CROWN()
    while stack:
        if search.out_of_time():
            return Verdict.TIMEOUT, None
        lower, upper = _take(stack, search.settings.batch_size)
        search.domains += len(lower)
        found = search.confirm((lower + upper) / 2)
        if found is not None:
            search.decided_by = "input-split"
            return Verdict.FALSIFIED, found
        bounds = crown.compute(search.network, lower, upper, C=search.C)
        points = (lower == upper).flatten(1).all(dim=1)
        for index in torch.nonzero(points).flatten().tolist():
            if search.counterexample_at(lower[index]):
                search.decided_by = "input-split"
                return Verdict.FALSIFIED, lower[index].numpy()
        open_ = ~search.refuted(bounds) & ~points  # a point box is its one float32 input, checked just now
        if not open_.any():
            continue
        if search.domains > search.settings.max_domains:
            return Verdict.UNKNOWN, None
        lower, upper = lower[open_], upper[open_]
        dims = choose_input_dims(search.network, lower, upper, search.C, search.rhs, search.groups)
        stack.append(_bisect(lower, upper, dims))
    search.decided_by = "input-split"
    return Verdict.VERIFIED, None


def _take(stack, size):
    """Pop up to ``size`` boxes from the newest batches (depth first keeps memory small)."""
    lowers, uppers, count = [], [], 0
    while stack and count < size:
        lower, upper = stack.pop()
        room = size - count
        if len(lower) > room:
            stack.append((lower[room:], upper[room:]))
            lower, upper = lower[:room], upper[:room]
        lowers.append(lower)
        uppers.append(upper)
        count += len(lower)
    return torch.cat(lowers), torch.cat(uppers)


def _bisect(lower, upper, dims):
    """Both halves of every box along its chosen flat dimension; the halves share the midpoint.

    When no float32 lies strictly between the two ends, the halves are the two ends themselves: the inputs
    are float32 numbers, so boxes keep shrinking until each is a single input the model decides.
    """
    flat_lo, flat_hi = lower.flatten(1), upper.flatten(1)
    rows = torch.arange(len(lower))
    lo_d, hi_d = flat_lo[rows, dims], flat_hi[rows, dims]
    mid = (lo_d + hi_d) / 2
    atomic = (mid <= lo_d) | (mid >= hi_d)
    left_hi, right_lo = flat_hi.clone(), flat_lo.clone()
    left_hi[rows, dims] = torch.where(atomic, lo_d, mid)
    right_lo[rows, dims] = torch.where(atomic, hi_d, mid)
    shape = lower.shape[1:]
    return (torch.cat([flat_lo, right_lo]).reshape(2 * len(lower), *shape),
            torch.cat([left_hi, flat_hi]).reshape(2 * len(lower), *shape))


def _relu_split(search: _Search):
    """Split unstable ReLUs (active / inactive) under split constraints; small leaves go to the MILP.

    On large inputs, as in beta-CROWN, every subdomain keeps the root's intermediate bounds (clamped by its
    splits) and only its output bound is optimised, over lower slopes and the split multipliers; on small
    ones the intermediate bounds are recomputed under the splits, which needs far fewer domains.
    """
    fixed = search.outer[0].numel() > search.settings.fixed_intermediate_above
    method = AlphaCROWN(iterations=max(5, search.settings.alpha_iterations // 2), optimize_upper=False,
                        fixed_intermediate=fixed)
    shapes = _relu_input_shapes(search.network)
    domains = [tuple(torch.zeros(shape, dtype=torch.int8).flatten() for shape in shapes)]
    while domains:
        if search.out_of_time():
            return Verdict.TIMEOUT, None
        batch, domains = domains[-search.settings.batch_size:], domains[:-search.settings.batch_size]
        search.domains += len(batch)
        splits = [torch.stack([d[i] for d in batch]).reshape(len(batch), *shape) for i, shape in enumerate(shapes)]
        lower = search.outer[0].unsqueeze(0).expand(len(batch), *search.outer[0].shape)
        upper = search.outer[1].unsqueeze(0).expand(len(batch), *search.outer[1].shape)
        bounds = method.compute(search.network, lower, upper, C=search.C, splits=splits,
                                prior=_expand(search.root, len(batch)))
        for index in torch.nonzero(~search.refuted(bounds)).flatten().tolist():
            verdict, x = _branch_or_solve(search, bounds, index, batch[index], domains)
            if verdict is not None:
                return verdict, x
        if len(domains) > search.settings.max_domains:
            return Verdict.UNKNOWN, None
    if search.undecided:
        search.decided_by = f"relu-split: {search.undecided} domains undecided"
        return Verdict.UNKNOWN, None
    search.decided_by = "relu-split+milp" if search.milp_calls else "relu-split"
    return Verdict.VERIFIED, None


def _expand(bounds: Bounds, count: int) -> Bounds:
    """One box's bounds as the prior of ``count`` subdomains of it."""
    grow = lambda t: t.expand(count, *t.shape[1:])  # noqa: E731
    return Bounds(grow(bounds.output_lower), grow(bounds.output_upper), tuple(map(grow, bounds.pre_lower)),
                  tuple(map(grow, bounds.pre_upper)), grow(bounds.infeasible), bounds.method)


def _branch_or_solve(search: _Search, bounds, index: int, splits, domains: list):
    """Hand a domain with few unstable neurons to the MILP, or split its most promising neuron.

    A MILP that cannot decide (time limit, or a point that float32 does not confirm) leaves the domain to
    splitting; after ``MILP_FAILURES`` such leaves the MILP is no longer tried. A domain with nothing left
    to split that the bounds cannot refute is undecided, and the search then ends as unknown at best.
    """
    unstable = [bounds.unstable(i)[index].flatten() & (splits[i] == 0) for i in range(len(splits))]
    count = sum(int(u.sum()) for u in unstable)
    if count <= search.settings.milp_max_unstable and search.milp_failures < MILP_FAILURES:
        verdict, x = _milp_leaf(search, bounds, index)
        if verdict is not Verdict.UNKNOWN:
            return verdict, x
        search.milp_failures += 1
    if count == 0:
        search.undecided += 1
        return None, None
    layer, neuron = choose_relu(bounds, index, unstable)
    for side in (1, -1):
        child = tuple(s.clone() for s in splits)
        child[layer][neuron] = side
        domains.append(child)
    return None, None


def _milp_leaf(search: _Search, bounds, index: int):
    """Decide a leaf exactly: every conjunction the bounds leave open must be infeasible under this
    domain's neuron bounds. Returns (None, None) when closed, FALSIFIED, TIMEOUT or UNKNOWN (undecided).

    The split constraints enter only through the clamped neuron bounds, so the MILP may range over a
    superset of the domain: 'unsat' stays a proof, and a 'sat' point is checked before it counts.
    """
    search.milp_calls += 1
    pre = [(bounds.pre_lower[i][index].double().numpy(), bounds.pre_upper[i][index].double().numpy())
           for i in range(len(bounds.pre_lower))]
    lo, hi = (v.double().numpy() for v in search.outer)
    gap = bounds.output_lower[index] - search.rhs
    for group, (A, b) in zip(search.groups, search.constraints):
        if bool((gap[group] > 0).any()):
            continue  # the bounds already refute this conjunction here
        remaining = search.settings.timeout - search.elapsed()
        if remaining <= 0:
            return Verdict.TIMEOUT, None
        slack = np.abs(np.atleast_2d(A)) @ search.float_error()  # the float32 model may stray this far
        result = solve_milp(search.network, lo, hi, pre, A, b,
                            time_limit=min(search.settings.milp_time_limit, remaining), slack=slack)
        status = getattr(result.status, "value", result.status)
        if status == "sat":
            x = torch.as_tensor(result.x, dtype=torch.float32).reshape(1, *search.network.input_shape)
            found = search.confirm(x)
            if found is not None:
                search.decided_by = "milp"
                return Verdict.FALSIFIED, found
            return Verdict.UNKNOWN, None
        if status != "unsat":
            return Verdict.UNKNOWN, None
    return None, None


def _relu_input_shapes(network: Network) -> list[tuple[int, ...]]:
    shapes = network.shapes()
    return [shapes[i] for i, layer in enumerate(network.layers) if layer.kind == "relu"]
