"""Complete verification of one input box against a disjunction of linear output constraints.

The question: is there an ``x`` in ``[lower, upper]`` whose logits ``y`` satisfy some conjunction
``A @ y <= b``? The search tries, in order: a falsifier round (a counterexample ends it), bounds on the
whole box (IBP, CROWN, alpha-CROWN), then branch and bound until a proof, a counterexample or the
deadline: input splitting for boxes with few free coordinates, ReLU splitting otherwise, with an exact
MILP for leaves with few unstable neurons. A leaf the MILP leaves open (its point does not replay in
float32, or the solver cannot decide) is not given up: the falsifier starts from the MILP's point, then
the leaf's input box is split (under the leaf's ReLU splits), down to single float32 inputs that the
model decides. The falsifier keeps a share of the time throughout, larger when the bounds are far from a
proof and the falsifier close to a counterexample (as alpha-beta-CROWN attacks during branch and bound).

A conjunction is refuted on a region when one of its rows has a lower bound strictly above its right-hand
side; the bounds are already widened for floating-point rounding, so no tie is ever read as a proof.
The float32 inputs of a box are the float32 roundings (to nearest) of its points, as onnxruntime receives
them: ``[fl(lower), fl(upper)]``. Bounds are computed on the box rounded outward, which contains them.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from certprune.bab.attack import Falsifier
from certprune.bab.branching import (candidate_relus, choose_input_dims, choose_relus, flat_to_layer, lookahead_choice,
                                     shortfall_of)
from certprune.bab.domains import (BoxQueue, DomainStack, Known, Pattern, ReluDomains, bisect, no_float_inside,
                                  select_bounds)
from certprune.bounds import CROWN, IBP, AlphaCROWN, Bounds
from certprune.bounds.alpha import inherited_bounds
from certprune.bounds.constrained import OutputConstrained
from certprune.bounds.floaterror import Rounding, float32_error
from certprune.bounds.rounding import forward_error
from certprune.deadline import Deadline, DeadlineExpired
from certprune.errors import UnsupportedLayerError
from certprune.floats import float32_box
from certprune.network import Network
from certprune.smt.milp import solve_milp
from certprune.types import Certificate, Counterexample, Result, Verdict

Constraint = tuple[np.ndarray, np.ndarray]
Replay = Callable[[np.ndarray], bool]
_bisect = bisect  # the name tests and older callers use


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """How hard to look. Boxes with at most ``input_split_dims`` free coordinates are split as boxes, others
    by ReLUs. ``attack_share`` of the time (up to ``attack_share_max`` when a proof looks unlikely) goes to
    the falsifier. A batch of domains is sized to take at most ``batch_seconds`` (and a quarter of the time
    left), so that the deadline holds."""

    timeout: float = 60.0
    batch_size: int = 1024
    batch_seconds: float = 2.0
    attack_restarts: int = 32
    attack_steps: int = 100
    attack_share: float = 0.1
    attack_share_max: float = 0.5
    alpha_iterations: int = 20
    input_split_dims: int = 16
    milp_max_unstable: int = 16
    milp_time_limit: float = 20.0
    # ReLU splitting keeps the parent's intermediate bounds (beta-CROWN style, cheap per domain) for inputs of
    # more than this many values, and recomputes them by CROWN under each domain's splits (tighter) otherwise,
    # and also for domains of at most ``tighten_depth`` splits (whose subtrees inherit the tighter bounds).
    fixed_intermediate_above: int = 100
    tighten_depth: int = 4
    # ReLU splitting chooses among this many best-scored neurons of a domain by bounding their children
    # cheaply (filtered smart branching); 1: the best-scored neuron. CPU seconds to a proof with 1 and 5:
    # oval21 cifar_base_kw img6767 34.5 and 16.7, cifar_wide_kw img8517 158 and 111; mnist_mlp_100x2 at eps
    # 0.05, nine images that need branch and bound, 29.7 and 24.4.
    relu_lookahead: int = 5
    # Before ReLU splitting, alpha-CROWN also optimises every ReLU input's bounds at the root (which the
    # domains then inherit) on networks of at most this many ReLUs, with this many steps per layer. Root cost
    # and wall time to a proof without and with it: oval21 cifar_base_kw img6767 0.2 -> 0.7 s, 13.6 -> 9.5 s;
    # cifar_deep_kw img4510 0.8 -> 4.6 s, 18.5 -> 13.3 s; sri_resnet_a (11,364 ReLUs) 3 -> 12 s, and idx 9101
    # and sri_resnet_b idx 865 verified in about 100 s instead of timing out at 300 s.
    intermediate_alpha_relus: int = 16384
    intermediate_alpha_iterations: int = 10
    # Before ReLU splitting, each conjunction still open is refuted, where it can be, by intermediate bounds
    # under its own constraint on the logits (``bounds.constrained``, INVPROP), on networks of at most this
    # many ReLUs, in at most this many passes (each conjunction while they pay) and this share of the time
    # left. mnist_mlp_256x3 at eps 0.05: image 34's six open classes (alpha-CROWN margins down to -6.96; open
    # after 600 s of branch and bound) are refuted in 5 s, image 0's nine in ten passes, 12 s.
    constrained_relus: int = 2048
    constrained_passes: int = 32
    constrained_share: float = 0.5
    max_domains: int = 2_000_000
    seed: int = 0


CORNER_ROWS = 3  # per open box, the rows farthest from a proof whose bound's minimising corner is checked


class _Found(Exception):
    """A replayed counterexample, raised from deep inside a step to end the search."""

    def __init__(self, x: np.ndarray, by: str) -> None:
        super().__init__(by)
        self.x, self.by = x, by


@dataclass
class _Search:
    """One question and the running state of its search (time, counts, why domains stayed open)."""

    network: Network
    outer: tuple[torch.Tensor, torch.Tensor]  # the box rounded outward: bounds are computed on it
    inner: tuple[torch.Tensor, torch.Tensor]  # the float32 inputs of the box: counterexamples lie in it
    constraints: Sequence[Constraint]
    settings: SearchSettings
    replay: Replay | None
    deadline: Deadline
    C: torch.Tensor = field(init=False)
    rhs: torch.Tensor = field(init=False)
    groups: list[slice] = field(init=False)
    falsifier: Falsifier = field(init=False)
    domains: int = 0
    milp_calls: int = 0
    milp_limit: int = 0  # leaves with at most this many unstable neurons go to the MILP
    milp_seconds: float = 0.0  # how long the last MILP call took
    decided_by: str = ""
    # a box of one float32 input is decided by its replay: onnxruntime computes the float32 model there. Not
    # so when the replay asks more (``--arithmetic real``): a point it turns down may still violate for real
    points_by_replay: bool = True
    unproven: int = 0  # boxes dropped without a proof or a replay (only without ``points_by_replay``)
    open: Counter = field(default_factory=Counter)  # why domains were left to further splitting
    attack_seconds: float = 0.0
    attack_share: float = 0.0
    lookahead_bounds: int = 0  # children bounded cheaply to choose a ReLU to split (``relu_lookahead``)
    root: Bounds | None = None  # the tightest bounds of the whole box, computed before branching
    root_slopes: object = None  # alpha-CROWN's slopes of the whole box: where the first split domains start
    pace: dict = field(default_factory=dict)  # kind of batch -> (domains, seconds) of the last one
    under: list = field(default_factory=list)  # (conjunction, Bounds under its constraint) of those left open
    _float_error: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.C, self.rhs, self.groups = stack_constraints(self.constraints)
        self.milp_limit = self.settings.milp_max_unstable
        self.attack_share = self.settings.attack_share
        accept = None if self.replay is None else self.replay
        self.falsifier = Falsifier(self.network, self.inner[0].numpy(), self.inner[1].numpy(),
                                   [A for A, _ in self.constraints], [b for _, b in self.constraints],
                                   seed=self.settings.seed, accept=accept)

    @property
    def free_dims(self) -> int:
        return int((self.outer[1] > self.outer[0]).sum())

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
        """Whether one float32 input of the box is a counterexample: by the replay on the original model
        when there is one (it applies the property's own rule, e.g. the model's decision), else by the
        constraints."""
        x = x.reshape(1, *self.network.input_shape)
        if bool(((x < self.inner[0]) | (x > self.inner[1])).any()):
            return False  # an input of the outward-rounded box that no input of the box rounds to
        if self.replay is not None:
            return bool(self.replay(x[0].numpy()))
        return bool(satisfies(self.network, x, self.constraints)[0])

    def float_error(self) -> np.ndarray:
        """(n_out,) bound on |float32 logits - exact logits| over the box, computed once."""
        if self._float_error is None:
            outer = tuple(v.unsqueeze(0) for v in self.outer)
            self._float_error = forward_error(self.network, *outer)[0].numpy()
        return self._float_error

    def attack(self, budget: float, **round_settings) -> None:
        """One falsifier round of at most ``budget`` seconds; raises _Found with a replayed counterexample."""
        started = self.deadline.clock()
        x = self.falsifier.round(self.deadline.within(budget), **round_settings)
        self.attack_seconds += self.deadline.clock() - started
        if x is not None:
            raise _Found(x, "attack")

    def batch_size(self, kind: str) -> int:
        """Domains for the next batch of this kind: the last batch's size scaled to the target time (linearly,
        which overestimates the time of a larger batch), so one batch never runs far past the deadline."""
        size, seconds = self.pace.get(kind, (1, 0.0))
        target = min(self.settings.batch_seconds, 0.25 * self.deadline.remaining())
        scaled = size * target / seconds if seconds > 0 else 2 * size
        return int(max(1, min(scaled, self.settings.batch_size)))

    def record(self) -> dict:
        return {"timeout": self.settings.timeout, "decided_by": self.decided_by, "domains": self.domains,
                "milp_calls": self.milp_calls, "lookahead_bounds": self.lookahead_bounds,
                "attack_rounds": self.falsifier.rounds, "attack_seconds": round(self.attack_seconds, 3), "open": dict(self.open)}


def verify_box(network: Network, lower: np.ndarray, upper: np.ndarray, constraints: Sequence[Constraint],
               settings: SearchSettings = SearchSettings(), replay: Replay | None = None,
               deadline: Deadline | None = None, points_by_replay: bool = True) -> Result:
    """Decide one box. ``replay(x)`` must confirm a counterexample on the original model (onnxruntime).
    ``deadline`` (by default ``settings.timeout`` from now) is shared with the caller's other work. With
    ``points_by_replay`` false (a replay that asks more than the float32 model, e.g. real arithmetic), a
    single point that the replay turns down is not safe for that: only bounds close it."""
    if settings.timeout <= 0:
        raise ValueError("timeout must be positive")
    deadline = deadline or Deadline(settings.timeout)
    shape = network.input_shape
    outer = tuple(torch.as_tensor(v.reshape(shape)) for v in float32_box(lower, upper, outward=True))
    inner = tuple(torch.as_tensor(v.reshape(shape)) for v in float32_inputs(lower, upper))
    search = _Search(network, outer, inner, constraints, settings, replay, deadline,
                     points_by_replay=points_by_replay)
    try:
        for step in (_interval_bounds, _crown_bounds, _first_attack, _whole_box, _root_milp, _output_constraints,
                     _branch_and_bound):
            verdict = step(search)
            if verdict is not None:
                return _result(search, verdict, None)
    except _Found as found:
        search.decided_by = found.by
        return _result(search, Verdict.FALSIFIED, found.x)
    except DeadlineExpired as expired:  # a bound pass that cannot stop halfway with a sound answer
        search.decided_by = str(expired)
        return _result(search, Verdict.TIMEOUT, None)
    raise AssertionError("the branch-and-bound step always decides")


def float32_inputs(lower, upper) -> tuple[np.ndarray, np.ndarray]:
    """The float32 inputs of a box ``[lower, upper]``: every float32 in ``[fl(lower), fl(upper)]`` is the
    rounding to nearest of some point of the box (rounding is monotone), and no other float32 is."""
    return np.asarray(lower, dtype=np.float64).astype(np.float32), np.asarray(upper, dtype=np.float64).astype(np.float32)


def _result(search: _Search, verdict: Verdict, x: np.ndarray | None) -> Result:
    seconds = search.deadline.elapsed()
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

    The bounds are computed in float32, so a row is refuted only by what float32 says soundly: each right-hand
    side is rounded up (a float32 rhs below the file's would let a bound between the two count as a
    proof), a summed row's one float32 step more (its float64 sum may have rounded down), and a row whose
    coefficients float32 cannot hold exactly gets rhs +inf: it never proves anything (counterexamples are
    still checked against the file's own rows, in float64).
    """
    rows, rhs, summed, groups, start = [], [], [], [], 0
    for A, b in constraints:
        A = np.atleast_2d(np.asarray(A, dtype=np.float64))
        b = np.asarray(b, dtype=np.float64).ravel()
        sums = np.zeros(len(A), dtype=bool)
        if len(A) > 1:
            A, b, sums = np.vstack([A, A.sum(axis=0)]), np.append(b, b.sum()), np.append(sums, True)
        rows.append(A)
        rhs.append(b)
        summed.append(sums)
        groups.append(slice(start, start + len(A)))
        start += len(A)
    C64, b64 = np.concatenate(rows), np.concatenate(rhs)
    C32, b32 = C64.astype(np.float32), b64.astype(np.float32)
    up = (b32.astype(np.float64) < b64) | np.concatenate(summed)
    b32 = np.where(up, np.nextafter(b32, np.float32(np.inf)), b32)
    b32[(C32.astype(np.float64) != C64).any(axis=1)] = np.inf
    return torch.from_numpy(C32), torch.from_numpy(b32.astype(np.float32)), groups


def refuted(output_lower: torch.Tensor, rhs: torch.Tensor, groups: list[slice]) -> torch.Tensor:
    """(B,) True where every conjunction has a row whose lower bound is strictly above its bound."""
    return proof_margin(output_lower, rhs, groups) > 0


def proof_margin(output_lower: torch.Tensor, rhs: torch.Tensor, groups: list[slice]) -> torch.Tensor:
    """(B,) min over conjunctions of the largest row gap ``lower - rhs``: > 0 exactly where refuted."""
    gap = output_lower - rhs
    # a conjunction without rows holds everywhere: nothing refutes it
    per = [gap[:, g].amax(dim=1) if g.stop > g.start else torch.full((len(gap),), -math.inf) for g in groups]
    return torch.stack(per, dim=1).amin(dim=1)


def satisfies(network: Network, x: torch.Tensor, constraints: Sequence[Constraint]) -> np.ndarray:
    """(B,) True where the network's float32 logits at ``x`` meet some conjunction (checked in float64)."""
    with torch.no_grad():
        y = network(x).double().numpy()
    hit = np.zeros(len(x), dtype=bool)
    for A, b in constraints:
        hit |= np.all(y @ np.atleast_2d(A).T <= np.asarray(b).ravel(), axis=1)
    return hit


# ---- the steps ---------------------------------------------------------------------------------

def _first_attack(search: _Search):
    s = search.settings
    search.attack(s.attack_share * search.deadline.remaining(), restarts=s.attack_restarts, steps=s.attack_steps)
    return Verdict.TIMEOUT if search.deadline.expired() else None


def _interval_bounds(search: _Search):
    """IBP on the whole box: so cheap that it goes before the falsifier."""
    return _bound_whole_box(search, [IBP()])


def _crown_bounds(search: _Search):
    """CROWN on the whole box, before the falsifier too: milliseconds where the falsifier's first round takes a
    share of the time (0.17 s of 0.2 per image of mnist_mlp_100x2 at eps 0.01, which CROWN mostly proves)."""
    return _bound_whole_box(search, [CROWN(deadline=search.deadline)])


def _whole_box(search: _Search):
    """Alpha-CROWN on the whole box (before ReLU splitting; input splitting keeps CROWN's bounds); sets the
    falsifier's share."""
    methods = []
    if search.free_dims > search.settings.input_split_dims:
        # Before ReLU splitting alpha-CROWN pays off; input splitting is cheaper with plain CROWN.
        s = search.settings
        refine = s.intermediate_alpha_iterations if search.network.relu_count <= s.intermediate_alpha_relus else 0
        methods.append(AlphaCROWN(iterations=s.alpha_iterations, deadline=search.deadline,
                                  intermediate_iterations=refine))
    verdict = _bound_whole_box(search, methods)
    if verdict is None:
        margin = float(proof_margin(search.root.output_lower, search.rhs, search.groups)[0])
        search.attack_share = _attack_share(search, margin)
    return verdict


def _root_milp(search: _Search):
    """The exact MILP on the whole box when the root's bounds leave few unstable neurons (as any leaf of ReLU
    splitting would get it). Input splitting alone can run for a million boxes near a tie that the MILP decides
    at once: 4 inputs, 5 unstable ReLUs, margin 0.0017 against a float32 error bound of 3e-4, 0.04 s."""
    if sum(search.root.unstable_counts()) > search.milp_limit or search.deadline.expired():
        return None
    closed, reason, _ = _milp_leaf(search, search.root, 0)
    if closed:
        search.decided_by = "milp"
        return Verdict.VERIFIED
    search.open[f"root milp: {reason}"] += 1
    return None


def _output_constraints(search: _Search):
    """Refute the conjunctions the root's bounds leave open by bounds under each one's own constraint
    (``OutputConstrained``). A refuted conjunction holds nowhere in the box: its rows' right sides become
    -inf, so every later bound refutes it and branch and bound works on the others only."""
    s = search.settings
    if search.free_dims <= s.input_split_dims or search.network.relu_count > s.constrained_relus:
        return None
    gap = search.root.output_lower[0] - search.rhs
    open_groups = [g for g in search.groups if g.stop > g.start and not bool((gap[g] > 0).any())]
    if not open_groups:
        return None
    width = max(g.stop - g.start for g in open_groups)
    A = torch.zeros(len(open_groups), width, search.C.shape[1], dtype=search.C.dtype)
    b = torch.full((len(open_groups), width), torch.inf, dtype=search.rhs.dtype)
    for k, g in enumerate(open_groups):
        A[k, : g.stop - g.start], b[k, : g.stop - g.start] = search.C[g], search.rhs[g]
    lower, upper = search.outer[0].unsqueeze(0), search.outer[1].unsqueeze(0)
    method = OutputConstrained(passes=s.constrained_passes,
                               deadline=search.deadline.within(s.constrained_share * search.deadline.remaining()))
    refuted, under = method.bounds_under(search.network, lower, upper, A, b, search.root)
    for k in np.flatnonzero(refuted.numpy()):
        search.rhs[open_groups[k]] = -torch.inf
    if bool(refuted.all()):
        search.decided_by = "output constraints"
        return Verdict.VERIFIED
    if refuted.any():
        search.decided_by = "output constraints+"
    left = [k for k in range(len(open_groups)) if not refuted[k]]
    left.sort(key=lambda k: -float(gap[open_groups[k]].max()))  # the closest to a proof first
    rows = search.C.shape[0]
    search.under = [(open_groups[k], Bounds.of_relu_inputs([t[k:k + 1] for t in under.pre_lower],
                                                           [t[k:k + 1] for t in under.pre_upper],
                                                           under.infeasible[k:k + 1], rows, under.method))
                    for k in left]
    return None


def _branch_and_bound(search: _Search):
    """Branch and bound on the whole question, or, after ``_output_constraints``, on each conjunction it left
    open in turn (the closest to a proof first), each from the bounds that hold under its own constraint:
    those are sound for proving that conjunction empty and for nothing else, so the others are set aside
    (right sides -inf) meanwhile. Every conjunction must be refuted; the first that is not ends the search."""
    if not search.under:
        return _search_domains(search)
    rhs, prefix = search.rhs.clone(), search.decided_by
    lower, upper = search.outer[0].unsqueeze(0), search.outer[1].unsqueeze(0)
    method = AlphaCROWN(iterations=search.settings.alpha_iterations, fixed_intermediate=True,
                        deadline=search.deadline)
    for group, under in search.under:
        search.rhs = torch.full_like(rhs, -torch.inf)
        search.rhs[group] = rhs[group]
        search.root, search.root_slopes, _ = method.domains(search.network, lower, upper, C=search.C, prior=under)
        if bool(search.refuted(search.root)[0]):
            continue
        verdict = _search_domains(search)
        if verdict is not Verdict.VERIFIED:
            return verdict
    search.rhs = rhs
    search.decided_by = prefix + "relu-split" + ("+milp" if search.milp_calls else "")
    return Verdict.VERIFIED


def _bound_whole_box(search: _Search, methods: list):
    lower, upper = search.outer[0].unsqueeze(0), search.outer[1].unsqueeze(0)
    for method in methods:
        if search.deadline.expired():
            return Verdict.TIMEOUT
        if isinstance(method, AlphaCROWN):
            bounds, search.root_slopes, _ = method.domains(search.network, lower, upper, C=search.C,
                                                           prior=search.root)
        else:
            bounds = method.compute(search.network, lower, upper, C=search.C, prior=search.root)
        search.root = bounds
        if bool(search.refuted(bounds)[0]):
            search.decided_by = type(method).__name__
            return Verdict.VERIFIED
        if bounds.input_coefficients is not None:
            _check_corners(search, lower, upper, bounds.output_lower, bounds.input_coefficients)
    return None


def _check_corners(search: _Search, lower: torch.Tensor, upper: torch.Tensor, output_lower: torch.Tensor,
                   coefficients: torch.Tensor) -> None:
    """Raises _Found when a corner where a linear lower bound is least (``bound_corners``) is a counterexample."""
    found = search.confirm(bound_corners(lower, upper, coefficients, output_lower - search.rhs))
    if found is not None:
        raise _Found(found, "bound corner")


def bound_corners(lower: torch.Tensor, upper: torch.Tensor, coefficients: torch.Tensor, gap: torch.Tensor,
                  rows: int = CORNER_ROWS) -> torch.Tensor:
    """(B * k, *shape): per box, the input corners where the linear lower bounds (coefficients (B, K, n)) of its
    k rows farthest from a proof (least ``gap``, (B, K)) are least: the relaxation's own worst cases. Where the
    outputs plateau (mnist_fc's networks) signed-gradient descent stalls far from a counterexample that such a
    corner is; nnenum likewise executes its LP's optimal point (its "abstract counterexample")."""
    k = min(rows, gap.shape[1])
    chosen = gap.topk(k, dim=1, largest=False).indices
    A = coefficients.gather(1, chosen.unsqueeze(-1).expand(-1, -1, coefficients.shape[-1]))
    corners = torch.where(A > 0, lower.flatten(1).unsqueeze(1), upper.flatten(1).unsqueeze(1))
    return corners.reshape(-1, *lower.shape[1:])


def _attack_share(search: _Search, margin: float) -> float:
    """The falsifier's share of the time: between ``attack_share`` and ``attack_share_max`` by where zero
    lies between the proof margin (< 0, how far the bounds are from a proof) and the lowest loss the
    falsifier reached (> 0, how far it is from a counterexample): near the loss, a counterexample is likely."""
    loss, s = search.falsifier.lowest_loss, search.settings
    if not (math.isfinite(loss) and math.isfinite(margin)) or loss - margin <= 0:
        return s.attack_share
    doubt = -margin / (loss - margin)  # 1 when the falsifier came closer than the bounds
    return s.attack_share + (s.attack_share_max - s.attack_share) * doubt


def _search_domains(search: _Search):
    """Bound batches of domains until none is open; ReLU patterns and boxes take turns."""
    shapes = _relu_input_shapes(search.network)
    boxes, patterns = BoxQueue([math.prod(s) for s in shapes]), DomainStack()
    if search.free_dims <= search.settings.input_split_dims:
        boxes.push(search.outer[0].unsqueeze(0), search.outer[1].unsqueeze(0))
        search.decided_by = "input-split"
    else:
        free = tuple(torch.zeros(1, math.prod(s), dtype=torch.int8) for s in shapes)
        patterns.push(ReluDomains(free, search.root, search.root_slopes))
        search.decided_by = "relu-split"
    turn = 0
    while boxes or patterns:
        if search.deadline.expired():
            search.open["queued"] = len(boxes) + len(patterns)
            return Verdict.TIMEOUT
        _attack_if_due(search)
        turn += 1
        if boxes and (not patterns or turn % 2):
            _box_batch(search, boxes, shapes)
        else:
            _pattern_batch(search, patterns, boxes, shapes)
        if search.domains > search.settings.max_domains:
            search.open["max_domains reached"] = len(boxes) + len(patterns)
            return Verdict.UNKNOWN
    if search.unproven:
        return Verdict.UNKNOWN
    if search.milp_calls:
        search.decided_by += "+milp"
    return Verdict.VERIFIED


def _attack_if_due(search: _Search) -> None:
    """A falsifier round whenever its time falls below its share of the time spent so far. The share grows
    while rounds keep getting closer to a counterexample and shrinks while they stall."""
    due = search.attack_share * search.deadline.elapsed() - search.attack_seconds
    if due <= 0:
        return
    before = search.falsifier.lowest_loss
    s = search.settings
    search.attack(max(due, 0.05), restarts=s.attack_restarts, steps=s.attack_steps, samples=256)
    closer = search.falsifier.lowest_loss < before - 1e-3 * abs(before)
    share = search.attack_share * (1.5 if closer else 0.7)
    search.attack_share = min(max(share, s.attack_share), s.attack_share_max)


def _timed(search: _Search, kind: str, count: int, started: float) -> None:
    search.pace[kind] = (count, search.deadline.clock() - started)


def _box_batch(search: _Search, boxes: BoxQueue, shapes) -> None:
    """Bound a batch of boxes: closed by the bounds, decided by the model (single inputs), or bisected along
    the dimension whose width most moves the bound. Halves chosen by the look-ahead keep the bounds it
    computed for them (they are not bounded again), and only those left open are queued."""
    started = search.deadline.clock()
    lower, upper, patterns, known = boxes.take(search.batch_size("box"))
    found = search.confirm((lower + upper) / 2)
    if found is not None:
        raise _Found(found, "input-split")
    if known is not None:
        output_lower, coefficients, infeasible = known.output_lower, known.input_coefficients, None
    else:
        search.domains += len(lower)
        if patterns is None:
            bounds = CROWN(deadline=search.deadline).compute(search.network, lower, upper, C=search.C)
        else:
            splits = [p.reshape(len(lower), *s) for p, s in zip(patterns, shapes)]
            bounds = _beta(search, fixed=False).compute(search.network, lower, upper, C=search.C, splits=splits,
                                                        prior=_expand(search.root, len(lower)))
        output_lower, coefficients, infeasible = bounds.output_lower, bounds.input_coefficients, bounds.infeasible
    points = (lower == upper).flatten(1).all(dim=1)
    for index in torch.nonzero(points).flatten().tolist():
        if search.counterexample_at(lower[index]):
            raise _Found(lower[index].numpy(), "input-split")
    closed = refuted(output_lower, search.rhs, search.groups)
    if infeasible is not None:
        closed |= infeasible
    open_ = ~closed & ~points  # a point box is its one float32 input, checked just now
    _unproven(search, ~closed & points, "a single point the bounds leave open (its replay decides nothing here)")
    if open_.any():
        lower, upper = lower[open_], upper[open_]
        if coefficients is not None:
            _check_corners(search, lower, upper, output_lower[open_], coefficients[open_])
            _split_by_lookahead(search, boxes, lower, upper, output_lower[open_], coefficients[open_])
        else:
            dims = choose_input_dims(search.network, lower, upper, search.C, search.rhs, search.groups)
            kept = _splittable(search, lower, upper, dims)
            boxes.push(*bisect(lower[kept], upper[kept], dims[kept]),
                       None if patterns is None else tuple(torch.cat([p[open_][kept]] * 2) for p in patterns))
    _timed(search, "box", len(open_), started)


def _split_by_lookahead(search: _Search, boxes: BoxQueue, lower, upper, parents, coefficients) -> None:
    """Halve open boxes as ``choose_input_dims_sb`` chooses, queueing the halves its look-ahead leaves open
    with the bounds it computed for them."""
    tried = []

    def shortfall(lo, hi):
        tried.append(_box_bounds(search, lo, hi, parents.repeat(2, 1)))
        return shortfall_of(tried[-1].output_lower, search.rhs,
                            refuted(tried[-1].output_lower, search.rhs, search.groups))

    dims, column = lookahead_choice(lower, upper, coefficients, _needed_rows(search, parents), shortfall)
    which, rows = torch.cat([column, column]), torch.arange(2 * len(lower))
    known = Known(*(torch.stack(parts)[which, rows] for parts in zip(*tried)))
    keep = ~refuted(known.output_lower, search.rhs, search.groups) & _splittable(search, lower, upper, dims).repeat(2)
    halves = bisect(lower, upper, dims)
    boxes.push(halves[0][keep], halves[1][keep], None, Known(*(k[keep] for k in known)))


def _unproven(search: _Search, which: torch.Tensor, why: str) -> None:
    """Count boxes dropped without a proof (only without ``points_by_replay``): the answer is then unknown."""
    if not search.points_by_replay and bool(which.any()):
        search.unproven += int(which.sum())
        search.open[why] += int(which.sum())


def _splittable(search: _Search, lower, upper, dims) -> torch.Tensor:
    """Which boxes may be bisected along ``dims``. Where no float32 lies strictly inside the chosen coordinate,
    ``bisect`` gives its two ends: every float32 input of the box, but not the real points between them, so
    without ``points_by_replay`` (real arithmetic) such a box is dropped as unproven instead."""
    if search.points_by_replay:
        return torch.ones(len(lower), dtype=torch.bool)
    atomic = no_float_inside(lower, upper, dims)
    _unproven(search, atomic, "a box whose chosen input has no float32 inside (real points between its ends)")
    return ~atomic


def _box_bounds(search: _Search, lower: torch.Tensor, upper: torch.Tensor, inherited: torch.Tensor) -> Known:
    """CROWN's bounds of boxes, or the ``inherited`` (B, K) lower bounds of the boxes they lie in where better
    (CROWN on a part can be looser than on the whole), with CROWN's input coefficients: the look-ahead."""
    search.domains += len(lower)
    bounds = CROWN(deadline=search.deadline).compute(search.network, lower, upper, C=search.C)
    return Known(torch.maximum(bounds.output_lower, inherited), bounds.input_coefficients)


def _beta(search: _Search, fixed: bool) -> AlphaCROWN:
    return AlphaCROWN(iterations=max(5, search.settings.alpha_iterations // 2), optimize_upper=False,
                      fixed_intermediate=fixed, deadline=search.deadline)


def _pattern_batch(search: _Search, patterns: DomainStack, boxes: BoxQueue, shapes) -> None:
    """Bound a batch of split domains on the whole box (beta-CROWN); open ones are split or solved.

    Each domain starts from its parent: its bounds (the prior: a child's bounds are never looser) and its
    optimised slopes and multipliers (alpha-beta-CROWN keeps them per domain rather than restarting). On large
    inputs, as in beta-CROWN, the ReLU input bounds are the parent's, clamped by the new split and carried
    forward by intervals, and only the output bound is optimised; on small ones they are recomputed by CROWN
    under the splits, which needs far fewer domains.
    """
    started = search.deadline.clock()
    batch = patterns.take(search.batch_size("relu"))
    n = len(batch)
    search.domains += n
    splits = [p.reshape(n, *shape) for p, shape in zip(batch.splits, shapes)]
    lower = search.outer[0].unsqueeze(0).expand(n, *search.outer[0].shape)
    upper = search.outer[1].unsqueeze(0).expand(n, *search.outer[1].shape)
    bounds, slopes, scores = _bound_domains(search, batch, lower, upper, splits)
    _timed(search, "relu", n, started)
    unstable = [bounds.unstable(i).flatten(1) & (batch.splits[i] == 0) for i in range(len(shapes))]
    counts = sum(u.sum(dim=1) for u in unstable)
    split = []
    for index in torch.nonzero(~search.refuted(bounds)).flatten().tolist():
        count = int(counts[index])
        if count > max(search.milp_limit, 0):
            split.append(index)
        elif search.deadline.expired():
            patterns.push(batch.select([index]))  # still open: counted as queued
        elif _leaf(search, bounds, index, batch.pattern(index), count, boxes):
            split.append(index)
    if split:
        branching = search.deadline.clock()
        patterns.push(_children(search, batch, bounds, slopes, scores, unstable, torch.tensor(split)))
        # the look-ahead is part of a batch's time, so that the next batch is sized to keep the deadline
        count, seconds = search.pace["relu"]
        search.pace["relu"] = (count, seconds + search.deadline.clock() - branching)


def _bound_domains(search: _Search, batch: ReluDomains, lower, upper, splits):
    """beta-CROWN on a batch of domains, over only the specification rows some domain still needs (rows of a
    conjunction the parent already refutes keep the parent's bounds, which hold on the child)."""
    depth = max(int((s != 0).sum(dim=1).max()) for s in batch.splits) if batch.splits else 0
    fixed = search.outer[0].numel() > search.settings.fixed_intermediate_above and depth > search.settings.tighten_depth
    need = _needed_rows(search, batch.prior.output_lower)
    start = batch.slopes
    bounds, slopes, scores = _beta(search, fixed).domains(
        search.network, lower, upper, C=search.C[need], splits=splits, prior=_rows_of(batch.prior, need),
        start=None if start is None else start.rows(need), target=search.rhs[need])
    out_lower, out_upper = batch.prior.output_lower.clone(), batch.prior.output_upper.clone()
    out_lower[:, need], out_upper[:, need] = bounds.output_lower, bounds.output_upper
    # an empty domain's rows are all +inf, as Bounds has them
    out_lower[bounds.infeasible], out_upper[bounds.infeasible] = torch.inf, -torch.inf
    bounds = Bounds(out_lower, out_upper, bounds.pre_lower, bounds.pre_upper, bounds.infeasible, bounds.method)
    return bounds, slopes.into_rows(need, start), scores


def _rows_of(bounds: Bounds, rows: torch.Tensor) -> Bounds:
    """The bounds of some specification rows only (a prior for a pass over those rows)."""
    return Bounds(bounds.output_lower[:, rows], bounds.output_upper[:, rows], bounds.pre_lower, bounds.pre_upper,
                  bounds.infeasible, bounds.method)


def _needed_rows(search: _Search, output_lower: torch.Tensor) -> torch.Tensor:
    """(K,) the rows of every conjunction that some domain's bounds do not yet refute."""
    need = torch.zeros(len(search.rhs), dtype=torch.bool)
    gap = output_lower - search.rhs
    for group in search.groups:
        if group.stop > group.start and not bool((gap[:, group] > 0).any(dim=1).all()):
            need[group] = True
    if not need.any():  # only conjunctions without rows are open (they hold everywhere): bound every row
        need[:] = True
    return need


def _expand(bounds: Bounds, count: int) -> Bounds:
    """One box's bounds as the prior of ``count`` subdomains of it."""
    grow = lambda t: t.expand(count, *t.shape[1:])  # noqa: E731
    return Bounds(grow(bounds.output_lower), grow(bounds.output_upper), tuple(map(grow, bounds.pre_lower)),
                  tuple(map(grow, bounds.pre_upper)), grow(bounds.infeasible), bounds.method)


def _children(search: _Search, batch: ReluDomains, bounds, slopes, scores, unstable,
              index: torch.Tensor) -> ReluDomains:
    """Both children of each domain ``index``, inheriting its bounds and slopes, split on its best-scored neuron;
    or, with ``relu_lookahead`` k > 1, on the best of its k best-scored neurons by a look-ahead
    (``_lookahead_children``)."""
    parents = ReluDomains(tuple(s[index] for s in batch.splits), select_bounds(bounds, index), slopes.select(index))
    scores, unstable = [s[index] for s in scores], [u[index] for u in unstable]
    if search.settings.relu_lookahead > 1:
        return _lookahead_children(search, parents, scores, unstable)
    return parents.children(*choose_relus(scores, parents.prior, unstable))


def _lookahead_children(search: _Search, parents: ReluDomains, scores, unstable) -> ReluDomains:
    """The filtered smart branching of De Palma et al. 2021 (alpha-beta-CROWN's kFSB): both children of each of
    a domain's k best-scored neurons get one cheap bound (``inherited_bounds``: the parent's slopes and
    multipliers, no ascent, its ReLU input bounds clamped by the new split), and the neuron whose children fall
    shortest of a proof in sum wins. Each bound holds on its child, so children it refutes are closed here and
    the others are queued with it as their prior. Candidates are bounded one rank at a time (memory)."""
    m = len(parents)
    sizes = [u.shape[1] for u in unstable]
    candidates = candidate_relus(scores, parents.prior, unstable, search.settings.relu_lookahead)
    need = _needed_rows(search, parents.prior.output_lower)
    prior = parents.prior
    needed = _rows_of(prior, need)
    lower = search.outer[0].unsqueeze(0).expand(m, *search.outer[0].shape)
    upper = search.outer[1].unsqueeze(0).expand(m, *search.outer[1].shape)
    shapes, start = _relu_input_shapes(search.network), parents.slopes.rows(need)
    parent = torch.cat([torch.arange(m)] * 2)  # the active children, then the inactive ones
    tried = []  # per candidate rank: (splits, full-row lower bounds, bounds) of its 2m children
    for column in candidates.unbind(dim=1):
        splits = parents.child_splits(*flat_to_layer(column, sizes))
        bounds = inherited_bounds(search.network, lower, upper, search.C[need], needed, start, parent,
                                  [p.reshape(2 * m, *shape) for p, shape in zip(splits, shapes)])
        out_lower = prior.output_lower[parent]
        out_lower[:, need] = bounds.output_lower  # at least the prior's (``finish``), +inf where empty
        tried.append((splits, out_lower, bounds))
    search.lookahead_bounds += 2 * m * len(tried)
    out_lower = torch.cat([t[1] for t in tried])
    closed = refuted(out_lower, search.rhs, search.groups) | torch.cat([t[2].infeasible for t in tried])
    gap = shortfall_of(out_lower, search.rhs, closed).reshape(len(tried), 2, m).sum(dim=1)  # (k, m)
    best = gap.argmax(dim=0).repeat(2)
    rows = torch.arange(2 * m)
    keep = ~closed.reshape(len(tried), 2 * m)[best, rows]
    best, rows = best[keep], rows[keep]

    def chosen(per_rank):  # the chosen children's rows of a per-rank tensor
        return torch.stack(per_rank)[best, rows]

    splits = tuple(chosen(list(layer)) for layer in zip(*(t[0] for t in tried)))
    known = Bounds(chosen([t[1] for t in tried]), prior.output_upper[parent[rows]],
                   tuple(chosen(list(layer)) for layer in zip(*(t[2].pre_lower for t in tried))),
                   tuple(chosen(list(layer)) for layer in zip(*(t[2].pre_upper for t in tried))),
                   torch.zeros(len(rows), dtype=torch.bool), prior.method)
    return ReluDomains(splits, known, parents.slopes.select(parent[rows]).stored())


def _leaf(search: _Search, bounds, index: int, pattern: Pattern, count: int, boxes: BoxQueue) -> bool:
    """A domain with few unstable neurons goes to the MILP; returns whether it should be ReLU-split still.

    A leaf the MILP cannot close stays open: when the solver ran out of time, only smaller leaves go to the
    MILP from then on and this one is split further; when its point does not replay (or the solver's answer
    is no proof), the falsifier starts from that point and the leaf's input box is bisected under its splits.
    """
    if count <= search.milp_limit:
        closed, reason, point = _milp_leaf(search, bounds, index)
        if closed:
            return False
        search.open[f"milp: {reason}"] += 1
        if reason.startswith("solver time limit") and count > 0:
            search.milp_limit = count - 1
            return True
        if point is not None:
            _attack_from(search, point)
    else:
        search.open["no unstable neuron left (bounds not tight enough)"] += 1
    _split_input(search, pattern, boxes)
    return False


def _split_input(search: _Search, pattern: Pattern, boxes: BoxQueue) -> None:
    """The leaf's region (the whole box under its splits), bisected as boxes that keep the splits."""
    lower, upper = search.outer[0].unsqueeze(0), search.outer[1].unsqueeze(0)
    dims = choose_input_dims(search.network, lower, upper, search.C, search.rhs, search.groups)
    if bool(_splittable(search, lower, upper, dims)[0]):
        boxes.push(*bisect(lower, upper, dims), tuple(torch.stack([p, p]) for p in pattern))


def _attack_from(search: _Search, point: np.ndarray) -> None:
    """A short local falsifier round from the MILP's point (the deepest it found in the unsafe set)."""
    starts = np.asarray(point, dtype=np.float32).reshape(1, *search.network.input_shape)
    search.attack(min(1.0, 0.05 * search.deadline.remaining()), restarts=8, steps=20, samples=0, starts=starts,
                  step_size=0.002)


def _milp_leaf(search: _Search, bounds, index: int) -> tuple[bool, str, np.ndarray | None]:
    """Decide a leaf exactly: every conjunction the bounds leave open must be infeasible under this domain's
    neuron bounds. Returns (closed, why it stayed open, the solver's unconfirmed point); raises _Found.

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
        remaining = search.deadline.remaining()
        if remaining <= 0 or remaining < search.milp_seconds:
            # HiGHS keeps its time limit only roughly (a presolve or an LP can run on: +3.4 s measured at the
            # end of a 60 s mnist_fc run), so a call is not started in less time than the last one took
            return False, "deadline", None
        slack = _leaf_slack(search, np.atleast_2d(A), pre)  # the float32 model may stray this far
        started = search.deadline.clock()
        result = solve_milp(search.network, lo, hi, pre, A, b,
                            time_limit=min(search.settings.milp_time_limit, remaining), slack=slack)
        search.milp_seconds = search.deadline.clock() - started
        status = getattr(result.status, "value", result.status)
        if status == "sat":
            x = torch.as_tensor(result.x, dtype=torch.float32).reshape(1, *search.network.input_shape)
            found = search.confirm(x)
            if found is not None:
                raise _Found(found, "milp")
            return False, "its point does not replay on the original model", result.x
        if status != "unsat":
            return False, result.reason or status, result.point
    return True, "", None


def _leaf_slack(search: _Search, A: np.ndarray, pre: list) -> np.ndarray:
    """(R,) how far ``A @ logits`` of the float32 model may stray from the exact one in a leaf: the a-priori
    bound over the whole box (``rounding.forward_error``, errors carried through |W|), or where the network
    is a dense chain the a-posteriori one on the leaf's neuron bounds ``pre`` (``floaterror.float32_error``:
    stable neurons pass no switching error and the rows keep the layers' cancellations), whichever is less.
    Both hold for every input of the leaf, which is all a counterexample in it can be. On mnist_mlp_256x3 at
    eps 0.05 (image 0, whole box, CROWN's neuron bounds) per logit: 0.92 to 1.17 against 0.25 to 0.31."""
    slack = np.abs(A) @ search.float_error()
    try:
        leaf = float32_error(search.network, search.outer[0].unsqueeze(0), search.outer[1].unsqueeze(0),
                             pre_bounds=[(torch.as_tensor(lo)[None], torch.as_tensor(hi)[None]) for lo, hi in pre],
                             rows=torch.as_tensor(A), rounding=Rounding(exact_graph=False))
    except UnsupportedLayerError:
        return slack
    return np.minimum(slack, leaf[0].numpy())


def _relu_input_shapes(network: Network) -> list[tuple[int, ...]]:
    return network.relu_shapes()
