"""CROWN: linear bounds carried backwards to the input through linear relaxations of the ReLUs (Zhang et al. 2018)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple, Optional

import torch

from certprune.bounds.base import BoundMethod, Bounds, Problem, check_kinds, finish, settle, widen_lower
from certprune.bounds.ibp import Interval, interval_step, output_rounding, spec_interval
from certprune.bounds.linear import AFFINE_RULES, JOIN_RULES, LinearBound, concretize
from certprune.deadline import Deadline
from certprune.network import INPUT, pool_windows

DEFAULT_CHUNK = 2**25  # coefficients in one linear-bound tensor (128 MB in float32)


class Relaxation(NamedTuple):
    """Linear bounds of y = relu(z) on the pre-activation bounds [l, u] of one ReLU layer (flat, N neurons).

    lower_slope * z <= y <= upper_slope * z + upper_bias. ``lower_slope`` is (B, 1, N), or (B, R, N) with one
    slope per bound row (alpha-CROWN); ``upper_slope`` is (B, 1, N) and ``upper_bias`` (B, N). ``shift``
    (B, R, N) or None is added to the coefficients of z: the beta-CROWN multipliers of the split constraints.
    """

    lower_slope: torch.Tensor
    upper_slope: torch.Tensor
    upper_bias: torch.Tensor
    shift: Optional[torch.Tensor] = None


def neuron_states(lower: torch.Tensor, upper: torch.Tensor):
    """Masks (active, inactive, unstable); a neuron with lower > upper (empty subdomain) counts as active."""
    active = lower >= 0
    inactive = (upper <= 0) & ~active
    return active, inactive, ~active & ~inactive


def relax(lower: torch.Tensor, upper: torch.Tensor) -> Relaxation:
    """The CROWN relaxation: upper chord u (z - l) / (u - l); lower slope 1 if u >= -l else 0 (unstable)."""
    active, _, unstable = neuron_states(lower, upper)
    ones = active.to(lower.dtype)
    upper_slope = torch.where(unstable, upper / torch.where(unstable, upper - lower, 1), ones)
    upper_bias = torch.where(unstable, -upper_slope * lower, 0)
    lower_slope = torch.where(unstable, (upper >= -lower).to(lower.dtype), ones)
    return Relaxation(lower_slope.unsqueeze(1), upper_slope.unsqueeze(1), upper_bias)


def _relu(layer, bound: LinearBound, shape_in, relaxation: Relaxation) -> LinearBound:
    # A lower bound takes the lower line where its coefficient is positive, the upper line where negative:
    # new A = A * upper_slope + A+ * (lower_slope - upper_slope); bias gains A- @ upper_bias.
    A = bound.A
    positive = A.clamp(min=0)
    with_all, with_positive = _times_vector(A, relaxation.upper_bias), _times_vector(positive, relaxation.upper_bias)
    term = with_all - with_positive  # A- @ upper_bias <= 0: nonpositive coefficients, nonnegative intercepts
    slope_gap = relaxation.lower_slope - relaxation.upper_slope
    if torch.is_grad_enabled():
        new_A = torch.addcmul(A * relaxation.upper_slope, positive, slope_gap)
    else:  # in place: saves allocating (and page-faulting) a tensor as large as A
        new_A = (A * relaxation.upper_slope).addcmul_(positive, slope_gap)
    if relaxation.shift is not None:
        new_A = new_A + relaxation.shift
    # Sum of |terms| of both products: A+ @ ub counted twice covers the cancellation in their difference.
    return LinearBound(new_A, bound.bias + term, bound.magnitude - term + 2 * with_positive)


def _times_vector(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, R): A (R, N) or (B, R, N) times the per-box vectors v (B, N)."""
    # Multiply and sum beats a batch of matrix-vector products for the small R, N of bound rows.
    return v @ A.T if A.dim() == 2 else (A * v.unsqueeze(-2)).sum(dim=-1)


class PoolRelaxation(NamedTuple):
    """Linear bounds of each max-pool output y over its window: x[index] <= y, and y <= x[index] where
    ``exact`` (that input's lower bound is at least every other's upper bound), else y <= ``upper``.

    ``index`` (B, N_out) holds flat input indices; ``exact`` (B, N_out) bool; ``upper`` (B, N_out).
    """

    index: torch.Tensor
    exact: torch.Tensor
    upper: torch.Tensor


def relax_maxpool(layer, x: Interval) -> PoolRelaxation:
    """The max-pool relaxation of DeepPoly: the input with the largest lower bound is a lower line."""
    windows = torch.from_numpy(pool_windows(layer, tuple(x.lower.shape[1:])))  # (N_out, K), -1 for padding
    padding = torch.full((x.lower.shape[0], 1), -torch.inf, dtype=x.lower.dtype)
    # entry -1 of a window picks the appended -inf column: padding never wins a max
    lower = torch.cat([x.lower.flatten(1), padding], dim=1)[:, windows]
    upper = torch.cat([x.upper.flatten(1), padding], dim=1)[:, windows]
    best_lower, best = lower.max(dim=-1)
    others = upper.scatter(-1, best.unsqueeze(-1), -torch.inf).amax(dim=-1)
    index = windows.expand(len(best), -1, -1).gather(-1, best.unsqueeze(-1)).squeeze(-1)
    return PoolRelaxation(index, best_lower >= others, upper.amax(dim=-1))


def _maxpool(layer, bound: LinearBound, shape_in, relaxation: PoolRelaxation) -> LinearBound:
    # Positive coefficients take the lower line x[index]; negative ones the upper line: x[index] where exact,
    # else the constant upper bound of the window.
    A = bound.A
    batch = relaxation.index.shape[0]
    if A.dim() == 2:
        A = A.expand(batch, *A.shape)
    negative = A.clamp(max=0)
    constant = torch.where(relaxation.exact, 0, relaxation.upper).unsqueeze(1)
    coefficient = torch.where(relaxation.exact.unsqueeze(1), A, A.clamp(min=0))
    term = (negative * constant).sum(dim=-1)  # <= 0
    back = torch.zeros(*A.shape[:-1], math.prod(shape_in), dtype=A.dtype)
    back.scatter_add_(-1, relaxation.index.unsqueeze(1).expand(-1, A.shape[1], -1), coefficient)
    return LinearBound(back, bound.bias + term, bound.magnitude - term)


# Backward rules by layer kind; joins (JOIN_RULES) return coefficients per input instead of a LinearBound.
RULES = {**AFFINE_RULES, "relu": _relu, "maxpool": _maxpool, **JOIN_RULES}


def back_substitute(problem: Problem, node: int, relaxations: dict, bound: LinearBound,
                    inject: dict | None = None) -> LinearBound:
    """Carry a bound on the output of layer ``node`` back to the network input, through the graph.

    Coefficients wait at each value until every reader of it has been processed (reverse topological
    order); where branches join, those from different readers add up. Intercepts add up across the graph.
    ``inject`` {position: coefficients} adds terms on the output of earlier layers to the same rows (a row
    that mixes a logit constraint with an intermediate neuron, see ``bounds.constrained``).
    """
    network, shapes = problem.network, problem.shapes
    pending = {node: bound.A}
    bias, magnitude = bound.bias, bound.magnitude
    for pos in range(node, -1, -1):
        A = pending.pop(pos, None)
        if inject and pos in inject:
            A = inject[pos] if A is None else A + inject[pos]
        if A is None:
            continue
        layer, sources = network.layers[pos], network.inputs[pos]
        if layer.kind in JOIN_RULES:
            parts = JOIN_RULES[layer.kind](layer, A, [shapes[j + 1] for j in sources])
        else:
            step = RULES[layer.kind](layer, LinearBound(A, bias, magnitude), shapes[sources[0] + 1],
                                     relaxations.get(pos))
            parts, bias, magnitude = (step.A,), step.bias, step.magnitude
        for j, part in zip(sources, parts):
            pending[j] = part if j not in pending else pending[j] + part
    return LinearBound(pending[INPUT], bias, magnitude)


def lower_rows(problem: Problem, node: int, relaxations: dict, A: torch.Tensor, forward_magnitude):
    """Widened lower bounds (B, R) of the rows A @ (output of layer ``node``) over each input box."""
    return lower_rows_linear(problem, node, relaxations, A, forward_magnitude)[0]


def lower_rows_linear(problem: Problem, node: int, relaxations: dict, A: torch.Tensor, forward_magnitude):
    """``lower_rows`` and the linear bound on the input it minimised (its coefficients, (B, R, n) or (R, n))."""
    bound = back_substitute(problem, node, relaxations, LinearBound.of(A))
    value, magnitude = concretize(bound, problem.lower.flatten(start_dim=1), problem.upper.flatten(start_dim=1))
    return widen_lower(value, magnitude + forward_magnitude), bound


@dataclass
class Sweep:
    """Intermediate bounds from the forward sweep: flat (lower, upper) per ReLU layer, their relaxations by
    layer position, the interval of the logits and the boxes whose splits are infeasible."""

    pre: list
    relaxations: dict
    output: Interval
    infeasible: torch.Tensor


def sweep(problem: Problem, prior: Bounds | None, chunk_elements: int, tighten: bool = True,
          deadline: Deadline | None = None, refine=None) -> Sweep:
    """Bounds of every ReLU input in order: intervals from the previous layer, then CROWN on unstable ones.

    Without ``tighten`` the intermediate bounds are the intervals intersected with the prior's and clamped
    by the splits (branch and bound reuses its root's intermediate bounds this way; beta multipliers then
    carry the splits into the output bound). With a ``deadline``, raises DeadlineExpired once it has passed
    (checked per layer and per chunk of back-substituted rows: one pass on a large conv net takes minutes).
    ``refine(problem, node, lower, upper, forward_magnitude, relaxations)``, when given, may tighten each
    ReLU input's CROWN bounds further (alpha-CROWN's optimised intermediate bounds) and returns them.
    """
    network = problem.network
    values = [Interval.of_box(problem.lower, problem.upper)]
    infeasible = torch.zeros(problem.batch, dtype=torch.bool)
    pre, relaxations = [], {}
    for pos, (layer, sources) in enumerate(zip(network.layers, network.inputs)):
        xs = [values[j + 1] for j in sources]
        if layer.kind == "relu":
            (x,) = xs
            i = len(pre)
            lower, upper = settle(problem, i, x.lower.flatten(1), x.upper.flatten(1), prior, infeasible)
            if tighten and _needs_back_substitution(network.layers[:pos]):
                lower, upper = _tighten(problem, sources[0], lower, upper, x.magnitude.flatten(1), relaxations,
                                        chunk_elements, deadline or Deadline.never())
                lower, upper = settle(problem, i, lower, upper, None, infeasible)
            if tighten and refine is not None:  # the first layer too: a constraint on the logits tightens it
                lower, upper = refine(problem, sources[0], lower, upper, x.magnitude.flatten(1), relaxations)
                lower, upper = settle(problem, i, lower, upper, None, infeasible)
            pre.append((lower, upper))
            relaxations[pos] = relax(lower, upper)
            xs = [Interval(lower.view(x.lower.shape), upper.view(x.upper.shape), x.magnitude)]
        elif layer.kind == "maxpool":
            relaxations[pos] = relax_maxpool(layer, xs[0])
        values.append(interval_step(layer, *xs))
    return Sweep(pre, relaxations, values[-1], infeasible)


def _needs_back_substitution(prefix) -> bool:
    # Interval arithmetic is already exact (up to rounding) for one affine layer applied to a box.
    affine = sum(layer.kind in ("dense", "conv2d", "affine", "add") for layer in prefix)
    return affine > 1 or any(layer.kind in ("relu", "maxpool") for layer in prefix)


def _tighten(problem: Problem, node: int, lower, upper, forward_magnitude, relaxations: dict, chunk_elements: int,
             deadline: Deadline):
    """CROWN bounds for the neurons of value ``node`` (a ReLU's input) that are unstable; stable ones keep theirs.

    Rows are [e_j; -e_j] for the needed neurons j, in chunks that keep each coefficient tensor bounded.
    """
    unstable = (lower < 0) & (upper > 0)
    needed = torch.nonzero(unstable.any(dim=0)).flatten()
    if needed.numel() == 0:
        return lower, upper
    width = max(math.prod(shape) for shape in problem.shapes[: node + 2])
    step = max(1, chunk_elements // (2 * problem.batch * width))
    lower, upper = lower.clone(), upper.clone()
    for start in range(0, needed.numel(), step):
        deadline.check("CROWN bounds")
        index = needed[start : start + step]
        k = index.numel()
        rows = torch.arange(k)
        A = torch.zeros(2 * k, lower.shape[1], dtype=lower.dtype)
        A[rows, index] = 1
        A[rows + k, index] = -1
        bound = lower_rows(problem, node, relaxations, A, forward_magnitude[:, index].repeat(1, 2))
        # Only where unstable in that box, so a box's bounds do not depend on the rest of the batch.
        update = unstable[:, index]
        lower[:, index] = torch.where(update, torch.maximum(lower[:, index], bound[:, :k]), lower[:, index])
        upper[:, index] = torch.where(update, torch.minimum(upper[:, index], -bound[:, k:]), upper[:, index])
    return lower, upper


def output_bounds(problem: Problem, result: Sweep, relaxations: dict, spec: torch.Tensor) -> torch.Tensor:
    """Widened lower bounds (B, R) of the rows of ``spec`` (R, n) or (B, R, n) applied to the logits."""
    return output_bounds_linear(problem, result, relaxations, spec)[0]


def output_bounds_linear(problem: Problem, result: Sweep, relaxations: dict, spec: torch.Tensor):
    """``output_bounds`` and the linear bounds on the input they minimised (``lower_rows_linear``)."""
    # Forward rounding of the logits and of spec @ logits (the quantity the bounds are about).
    forward = output_rounding(spec, result.output)
    return lower_rows_linear(problem, len(problem.network.layers) - 1, relaxations, spec, forward)


def both_sides(spec: torch.Tensor) -> torch.Tensor:
    """Rows [C; -C]: lower bounds of -C @ y are minus upper bounds of C @ y."""
    return torch.cat([spec, -spec], dim=-2)


@dataclass(frozen=True, kw_only=True)
class CROWN(BoundMethod):
    """CROWN with adaptive lower slopes; every ReLU input bounded by CROWN itself (back-substitution).

    A neuron is back-substituted in the boxes where the interval bounds from the previous layer (and the
    prior) leave it unstable; elsewhere it keeps the interval bounds that already decide it, so each box's
    result is independent of the rest of the batch. ``chunk_elements`` bounds the size of one coefficient
    tensor (memory), trading it for more, smaller matrix products. With ``fixed_intermediate`` and a prior,
    ReLU inputs keep the prior's bounds (clamped by the splits): only the output rows are back-substituted.
    """

    chunk_elements: int = DEFAULT_CHUNK
    fixed_intermediate: bool = False  # with a prior: keep its ReLU input bounds instead of recomputing them
    deadline: Deadline | None = None  # past it, DeadlineExpired is raised (no partial bound is sound to return)
    name = "crown"

    def run(self, problem: Problem, prior: Bounds | None) -> Bounds:
        check_kinds(problem.network, RULES, "CROWN")
        result = sweep(problem, prior, self.chunk_elements, tighten=not (self.fixed_intermediate and prior is not None),
                       deadline=self.deadline)
        k = problem.rows
        bound, linear = output_bounds_linear(problem, result, result.relaxations, both_sides(problem.spec))
        interval_lower, interval_upper = spec_interval(problem.spec, result.output)
        out_lower = torch.maximum(bound[:, :k], interval_lower)
        out_upper = torch.minimum(-bound[:, k:], interval_upper)
        bounds = finish(problem, result.pre, out_lower, out_upper, result.infeasible, prior, self.name)
        coefficients = linear.A[..., :k, :].expand(problem.batch, k, linear.A.shape[-1])
        return replace(bounds, input_coefficients=coefficients)
