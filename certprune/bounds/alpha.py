"""alpha-CROWN with beta-CROWN split multipliers: CROWN's lower slopes and the Lagrange multipliers of the
ReLU split constraints optimised by gradient ascent on the output bounds (Xu et al. 2021, Wang et al. 2021).

For branch and bound, ``AlphaCROWN.domains`` also starts from a parent domain's slopes and multipliers (as
alpha-beta-CROWN keeps them per domain instead of restarting), returns each domain's best ones for its
children, and scores every unstable ReLU by the real backward coefficients of the bound (see ``_scores``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from certprune.bounds.base import BoundMethod, Bounds, Problem, check_kinds, check_prior, finish, prepare, settle
from certprune.bounds.crown import (DEFAULT_CHUNK, RULES, PoolRelaxation, Relaxation, Sweep, both_sides, lower_rows,
                                    neuron_states, output_bounds, relax, sweep)
from certprune.bounds.ibp import Interval, spec_interval
from certprune.deadline import Deadline


@dataclass(frozen=True)
class Slopes:
    """Per domain, per ReLU layer i: lower slopes ``alpha[i]`` and split multipliers ``beta[i]``, each
    (B, R, N_i) for the R bound rows. Any alpha in [0, 1] and beta >= 0 is valid: a start, never a bound."""

    alpha: tuple[torch.Tensor, ...]
    beta: tuple[torch.Tensor, ...]

    def stored(self) -> "Slopes":
        """In bfloat16: half the memory of a queue of domains, and still a valid start (values stay in
        [0, 1] and >= 0 when rounded)."""
        return Slopes(tuple(a.to(torch.bfloat16) for a in self.alpha), tuple(b.to(torch.bfloat16) for b in self.beta))

    def into_rows(self, need: torch.Tensor, rest: "Slopes | None") -> "Slopes":
        """These slopes of the rows ``need`` (K,) as slopes of all K rows, with ``rest``'s (or zeros, also
        valid) in the others."""
        def put(new, old):
            if old is None:
                out = torch.zeros(new.shape[0], len(need), new.shape[2], dtype=new.dtype)
            else:
                out = old.to(new.dtype, copy=True)
            out[:, need] = new
            return out

        olds = (None,) * len(self.alpha) if rest is None else rest.alpha
        oldb = (None,) * len(self.beta) if rest is None else rest.beta
        return Slopes(tuple(map(put, self.alpha, olds)), tuple(map(put, self.beta, oldb)))

    def select(self, index) -> "Slopes":
        return Slopes(tuple(a[index] for a in self.alpha), tuple(b[index] for b in self.beta))

    def rows(self, rows) -> "Slopes":
        return Slopes(tuple(a[:, rows] for a in self.alpha), tuple(b[:, rows] for b in self.beta))

    @staticmethod
    def cat(parts: list["Slopes"]) -> "Slopes":
        return Slopes(tuple(torch.cat(a) for a in zip(*(p.alpha for p in parts))),
                      tuple(torch.cat(b) for b in zip(*(p.beta for p in parts))))


class _Parameters:
    """The optimised quantities, one tensor (B, R, N) per ReLU layer position and bound row.

    alpha: lower slope of each unstable ReLU, any value in [0, 1] gives a valid lower line alpha * z <= relu(z).
    beta: multiplier >= 0 of each split constraint s * z >= 0 (s = +1 active, -1 inactive). For x in the
    subdomain, f(x) >= f(x) - sum beta s z, so a lower bound of the right side over the whole relaxed box
    bounds f on the subdomain; the term adds -beta * s to the coefficient of z when crossing the ReLU.
    """

    def __init__(self, problem: Problem, result: Sweep, rows: int, with_beta: bool, start: Slopes | None) -> None:
        self.base = result.relaxations
        self.alpha, self.unstable, self.beta, self.signs = {}, {}, {}, {}
        for i, pos in enumerate(problem.relu_positions):
            lower, upper = result.pre[i]
            unstable = neuron_states(lower, upper)[2]
            crown = self.base[pos].lower_slope.expand(-1, rows, -1)
            if unstable.any():
                # Stable neurons keep CROWN's exact slope (0 or 1): their gradient is masked out below.
                begin = crown if start is None else torch.where(unstable.unsqueeze(1), start.alpha[i].to(crown.dtype),
                                                                crown)
                self.alpha[pos] = begin.clone().requires_grad_()
                self.unstable[pos] = unstable.unsqueeze(1).to(problem.dtype)
            split = problem.splits[i]
            if with_beta and split is not None:
                begin = torch.zeros(problem.batch, rows, lower.shape[1], dtype=problem.dtype)
                if start is not None:
                    begin = start.beta[i].to(problem.dtype, copy=True)
                self.beta[pos] = begin.requires_grad_()
                self.signs[pos] = split.unsqueeze(1).to(problem.dtype)

    @property
    def tensors(self) -> list:
        return [*self.alpha.values(), *self.beta.values()]

    def relaxations(self, upper_bias: dict | None = None) -> dict:
        out = dict(self.base)
        for pos in set(self.alpha) | set(self.beta) | set(upper_bias or ()):
            base = self.base[pos]
            slope = self.alpha.get(pos, base.lower_slope)
            shift = -self.beta[pos] * self.signs[pos] if pos in self.beta else None
            bias = upper_bias[pos] if upper_bias and pos in upper_bias else base.upper_bias
            out[pos] = Relaxation(slope, base.upper_slope, bias, shift)
        return out

    def mask(self, grads: tuple) -> tuple:
        grads = list(grads)
        for k, pos in enumerate(self.alpha):
            grads[k] = grads[k] * self.unstable[pos]
        return tuple(grads)

    def project(self) -> None:
        with torch.no_grad():
            for alpha in self.alpha.values():
                alpha.clamp_(0, 1)
            for beta in self.beta.values():
                beta.clamp_(min=0)

    def slopes(self, problem: Problem, rows: int) -> Slopes:
        """The current values as a Slopes (CROWN's slope and zero multipliers where nothing is optimised)."""
        alpha, beta = [], []
        for i, pos in enumerate(problem.relu_positions):
            n = self.base[pos].upper_bias.shape[1]
            alpha.append(self.alpha[pos].detach() if pos in self.alpha
                         else self.base[pos].lower_slope.expand(-1, rows, -1))
            beta.append(self.beta[pos].detach() if pos in self.beta
                        else torch.zeros(problem.batch, rows, n, dtype=problem.dtype))
        return Slopes(tuple(alpha), tuple(beta))


class _Adam:
    """Adam ascent steps written out (torch.optim's fused Adam costs a second of imports and per-call set-up
    that dominates the small, many batches of branch and bound)."""

    def __init__(self, tensors: list, rates: list, decay: float) -> None:
        self.tensors, self.rates, self.decay, self.t = tensors, rates, decay, 0
        self.m = [torch.zeros_like(t) for t in tensors]
        self.v = [torch.zeros_like(t) for t in tensors]

    def ascend(self, grads) -> None:
        self.t += 1
        c1, c2 = 1 - 0.9**self.t, 1 - 0.999**self.t
        with torch.no_grad():
            for k, (t, g) in enumerate(zip(self.tensors, grads)):
                self.m[k].mul_(0.9).add_(g, alpha=0.1)
                self.v[k].mul_(0.999).addcmul_(g, g, value=0.001)
                step = self.m[k] / (self.v[k].div(c2).sqrt_().add_(1e-8))
                t.add_(step, alpha=self.rates[k] / c1)
        self.rates = [r * self.decay for r in self.rates]


@dataclass(frozen=True, kw_only=True)
class AlphaCROWN(BoundMethod):
    """alpha-CROWN (beta-CROWN when splits are given and ``beta``): intermediate bounds by CROWN, then the
    output bounds optimised over per-neuron, per-row lower slopes (and split multipliers) with Adam.

    ``iterations`` Adam steps with learning rates ``lr`` (alpha) and ``lr_beta``, each decayed by ``lr_decay``
    per step. The returned bound is the best one seen per element, starting from CROWN's (iteration 0), so it
    is never looser than CROWN. Without ``optimize_upper`` only lower bounds are optimised and upper bounds are
    CROWN's (half the work when only lower bounds matter, as in branch and bound). Once ``deadline`` has
    passed no further step is taken: the best bound so far is returned (every step's bound is sound).
    With ``intermediate_iterations`` the bounds of every ReLU input are optimised too (``_refine``), so the
    relaxations the output bound rests on are tighter: costly on large networks, strong on deep MLPs.
    """

    iterations: int = 20
    lr: float = 0.1
    lr_beta: float = 0.05
    lr_decay: float = 0.98
    beta: bool = True
    optimize_upper: bool = True
    chunk_elements: int = DEFAULT_CHUNK
    fixed_intermediate: bool = False  # with a prior: keep its ReLU input bounds (see CROWN)
    deadline: Deadline | None = None
    intermediate_iterations: int = 0  # > 0: also optimise the slopes for every ReLU input's bounds
    name = "alpha-crown"

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.lr <= 0 or self.lr_beta <= 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(f"invalid AlphaCROWN settings: {self}")

    def run(self, problem: Problem, prior: Bounds | None) -> Bounds:
        return self._run(problem, prior, None, None)[0]

    def domains(self, network, lower: torch.Tensor, upper: torch.Tensor, C=None, splits=None, *,
                prior: Bounds | None = None, start: Slopes | None = None,
                target: torch.Tensor | None = None) -> tuple[Bounds, Slopes, Optional[tuple]]:
        """Bounds of a batch of subdomains (as ``compute``), optimised from the slopes ``start`` (a parent's;
        None: CROWN's), with each domain's best slopes for the lower-bound rows, and, given ``target`` (R,),
        per ReLU layer (B, N_i) branching scores of the rows whose lower bound is not above their target."""
        problem = prepare(network, lower, upper, C, splits)
        check_prior(problem, prior)
        with torch.no_grad():
            return self._run(problem, prior, start, target)

    def _run(self, problem: Problem, prior: Bounds | None, start: Slopes | None, target):
        check_kinds(problem.network, RULES, "AlphaCROWN")
        refine = None
        if self.intermediate_iterations > 0:
            refine = _Refine(self.intermediate_iterations, self.lr, self.lr_decay, self.deadline)
        result = sweep(problem, prior, self.chunk_elements, tighten=not (self.fixed_intermediate and prior is not None),
                       deadline=self.deadline, refine=refine)
        k = problem.rows
        if self.optimize_upper:
            start = None if start is None else Slopes(*(tuple(torch.cat([t, t], dim=1) for t in part)
                                                        for part in (start.alpha, start.beta)))
            bound, slopes, scores = self._optimise(problem, result, both_sides(problem.spec), start, None)
            out_lower, out_upper = bound[:, :k], -bound[:, k:]
            slopes = slopes.rows(slice(0, k))
        else:
            out_lower, slopes, scores = self._optimise(problem, result, problem.spec, start, target)
            out_upper = -output_bounds(problem, result, result.relaxations, -problem.spec)
        interval_lower, interval_upper = spec_interval(problem.spec, result.output)
        out_lower, out_upper = torch.maximum(out_lower, interval_lower), torch.minimum(out_upper, interval_upper)
        bounds = finish(problem, result.pre, out_lower, out_upper, result.infeasible, prior, self.name)
        return bounds, slopes, scores

    def _optimise(self, problem: Problem, result: Sweep, spec: torch.Tensor, start: Slopes | None, target):
        """Best widened lower bounds (B, R) of the rows of ``spec`` over the iterations, the slopes that gave
        them, and the branching scores (given ``target``)."""
        rows = spec.shape[-2]
        params = _Parameters(problem, result, rows, self.beta, None)
        kept = params.slopes(problem, rows)
        if start is not None:
            params = _Parameters(problem, result, rows, self.beta, start)
        if start is not None or not params.tensors:
            # CROWN's own bound first: a start inherited from a parent can only add to it.
            best = output_bounds(problem, result, result.relaxations, spec)
        else:  # the first step below is CROWN's bound
            best = torch.full((problem.batch, rows), -torch.inf, dtype=problem.dtype)
        if params.tensors:
            best, kept = self._ascend(problem, result, spec, params, best, kept)
        scores = None if target is None else _scores(problem, result, spec, params, kept, best, target)
        return best, kept, scores

    def _ascend(self, problem, result, spec, params: _Parameters, best, kept: Slopes):
        rates = [self.lr] * len(params.alpha) + [self.lr_beta] * len(params.beta)
        adam = _Adam(params.tensors, rates, self.lr_decay)
        with torch.enable_grad():
            for step in range(self.iterations + 1):
                bound = output_bounds(problem, result, params.relaxations(), spec)
                better = bound.detach() > best
                if better.any():
                    best = torch.where(better, bound.detach(), best)
                    kept = _keep(kept, params.slopes(problem, spec.shape[-2]), better)
                if step == self.iterations or (self.deadline is not None and self.deadline.expired()):
                    break
                # Rows and boxes are independent (own slopes and multipliers), so the sum ascends each.
                adam.ascend(params.mask(torch.autograd.grad(bound.sum(), params.tensors)))
                params.project()
        return best, kept


def inherited_bounds(network, lower: torch.Tensor, upper: torch.Tensor, C, prior: Bounds, start: Slopes,
                     parent: torch.Tensor, splits) -> Bounds:
    """Bounds of split domains in one backward pass, without ascent: the cheap bound of a branching look-ahead.

    ``lower``, ``upper``, ``prior`` and ``start`` are those of m parent domains; ``parent`` (n,) names the
    parent of each of n children and ``splits`` their split patterns, each its parent's and more. A child keeps
    its parent's ReLU input bounds clamped by its splits, its parent's slopes and multipliers (a new split's
    multiplier is the parent's value there), and its parent's logit interval, all of which hold on the child
    (a subset); any slopes in [0, 1] and multipliers >= 0 are sound, so this bounds each child. The parents'
    intervals are propagated once, not once per child. Upper bounds are the parents'."""
    parents = prepare(network, lower, upper, C)
    check_prior(parents, prior)
    check_kinds(network, RULES, "AlphaCROWN")
    with torch.no_grad():
        swept = sweep(parents, prior, DEFAULT_CHUNK, tighten=False)
        problem = prepare(network, lower[parent], upper[parent], C, splits)
        infeasible = swept.infeasible[parent]
        pre = [settle(problem, i, low[parent], high[parent], None, infeasible)
               for i, (low, high) in enumerate(swept.pre)]
        relaxations = {pos: PoolRelaxation(*(t[parent] for t in r)) for pos, r in swept.relaxations.items()
                       if isinstance(r, PoolRelaxation)}
        relaxations.update({pos: relax(low, high) for pos, (low, high) in zip(problem.relu_positions, pre)})
        output = Interval(*(t[parent] for t in swept.output))
        result = Sweep(pre, relaxations, output, infeasible)
        params = _Parameters(problem, result, problem.rows, True, start.select(parent))
        bound = output_bounds(problem, result, params.relaxations(), problem.spec)
        interval_lower, _ = spec_interval(problem.spec, output)
        inherited = Bounds(prior.output_lower[parent], prior.output_upper[parent], (), (), prior.infeasible[parent],
                           prior.method)
        return finish(problem, pre, torch.maximum(bound, interval_lower), inherited.output_upper, infeasible,
                      inherited, "beta-crown look-ahead")


@dataclass(frozen=True)
class _Refine:
    """Optimised intermediate bounds (alpha-CROWN's, with one slope per neuron shared by the rows of a
    layer): the lower slopes of every earlier unstable ReLU are moved by Adam to raise the sum of the
    lower bounds of [z_j; -z_j] for the unstable inputs z_j of one ReLU layer. Every slope in [0, 1] gives
    a sound bound, the first step is CROWN's, and the best bound per row over the steps is kept."""

    iterations: int
    lr: float
    decay: float
    deadline: Deadline | None

    def __call__(self, problem: Problem, node: int, lower, upper, forward_magnitude, relaxations: dict):
        unstable = (lower < 0) & (upper > 0)
        needed = torch.nonzero(unstable.any(dim=0)).flatten()
        earlier = [pos for pos, r in relaxations.items() if isinstance(r, Relaxation) and bool((r.upper_bias > 0).any())]
        if needed.numel() == 0 or not earlier:
            return lower, upper
        k = needed.numel()
        rows = torch.arange(k)
        A = torch.zeros(2 * k, lower.shape[1], dtype=lower.dtype)
        A[rows, needed] = 1
        A[rows + k, needed] = -1
        magnitude = forward_magnitude[:, needed].repeat(1, 2)
        slopes = {pos: relaxations[pos].lower_slope.expand(-1, 2 * k, -1).clone().requires_grad_() for pos in earlier}
        masks = {pos: (relaxations[pos].upper_bias > 0).unsqueeze(1).to(lower.dtype) for pos in earlier}
        adam = _Adam(list(slopes.values()), [self.lr] * len(slopes), self.decay)
        best = None
        with torch.enable_grad():
            for step in range(self.iterations + 1):
                current = dict(relaxations)
                current.update({pos: relaxations[pos]._replace(lower_slope=slope) for pos, slope in slopes.items()})
                bound = lower_rows(problem, node, current, A, magnitude)
                best = bound.detach() if best is None else torch.maximum(best, bound.detach())
                if step == self.iterations or (self.deadline is not None and self.deadline.expired()):
                    break
                if not bound.requires_grad:  # no earlier ReLU with a slope reaches this layer: nothing to optimise
                    break
                # allow_unused: a ReLU on a parallel branch of a graph does not reach this layer
                grads = torch.autograd.grad(bound.sum(), list(slopes.values()), allow_unused=True)
                adam.ascend([torch.zeros_like(slopes[pos]) if g is None else g * masks[pos]
                             for g, pos in zip(grads, slopes)])
                with torch.no_grad():
                    for slope in slopes.values():
                        slope.clamp_(0, 1)
        lower, upper = lower.clone(), upper.clone()
        update = unstable[:, needed]
        lower[:, needed] = torch.where(update, torch.maximum(lower[:, needed], best[:, :k]), lower[:, needed])
        upper[:, needed] = torch.where(update, torch.minimum(upper[:, needed], -best[:, k:]), upper[:, needed])
        return lower, upper


def _keep(kept: Slopes, now: Slopes, better: torch.Tensor) -> Slopes:
    """Per domain and row, the slopes of the better bound."""
    where = better.unsqueeze(-1)
    return Slopes(tuple(torch.where(where, n, k) for n, k in zip(now.alpha, kept.alpha)),
                  tuple(torch.where(where, n, k) for n, k in zip(now.beta, kept.beta)))


def _scores(problem: Problem, result: Sweep, spec, params: _Parameters, kept: Slopes, best, target) -> tuple:
    """Per ReLU layer (B, N): how much each unstable neuron's upper relaxation costs the open rows' bounds.

    The lower bound of a row contains ``min(lambda_j, 0) * b_j`` for each ReLU j, where lambda_j is the
    backward coefficient of relu(z_j) and b_j = -u_j l_j / (u_j - l_j) the intercept of its upper line; the
    derivative of the bound in b_j is therefore min(lambda_j, 0). Splitting j removes that intercept, so the
    score is -b_j * sum over open rows of min(lambda_j, 0): the intercept score of BaBSR / FSB (Bunel et al.
    2020, De Palma et al. 2021) with the coefficients of the optimised bound itself.
    """
    for i, pos in enumerate(problem.relu_positions):
        if pos in params.alpha:
            params.alpha[pos] = kept.alpha[i].clone()
        if pos in params.beta:
            params.beta[pos] = kept.beta[i].clone()
    biases = {pos: result.relaxations[pos].upper_bias.clone().requires_grad_() for pos in problem.relu_positions}
    weight = (best <= target).to(best.dtype)  # rows already above their target need nothing more
    with torch.enable_grad():
        bound = output_bounds(problem, result, params.relaxations(biases), spec)
        grads = torch.autograd.grad((bound * weight).sum(), list(biases.values()))
    return tuple(-g * b.detach() for g, b in zip(grads, biases.values()))
