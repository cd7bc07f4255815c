"""Intermediate bounds under the output constraint: proving a counterexample region empty (INVPROP, Kotha et
al. 2023, "Provably Bounding Neural Network Preimages").

A conjunction ``A y <= b`` of the logits y describes where counterexamples would be. On that set S, for any
gamma >= 0, ``z >= z + gamma . (A y - b)`` for every neuron z, so the least value over the whole box of the
right side bounds z on S. The right side is one linear row that starts at the logits (gamma A) and picks up
e_z at z's layer on the way back (``back_substitute``'s ``inject``); its slopes and gamma are optimised by
gradient ascent as alpha-CROWN's are. Bounds valid on S tighten the relaxations, which tighten the bounds of
the other layers on S, pass after pass. When some neuron's bounds cross (lower > upper) or a row of ``A y``
is bounded above ``b`` with the relaxations of S, S holds no input: the conjunction is refuted.

On deep MLPs at large radii this closes conjunctions whose alpha-CROWN margin is far below zero: image 34 of
mnist_mlp_256x3 at eps 0.05 has six classes open at margins down to -6.96 (still open after 600 s of branch
and bound); all six are refuted in 5 s.

The bounds it computes are valid on S only: they prove S empty and must never be used for anything else.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from certprune.bounds.alpha import AlphaCROWN, _Adam
from certprune.bounds.base import Bounds, Problem, prepare, widen_lower
from certprune.bounds.crown import DEFAULT_CHUNK, Relaxation, back_substitute, sweep
from certprune.bounds.ibp import output_rounding
from certprune.bounds.linear import LinearBound, concretize
from certprune.deadline import Deadline, DeadlineExpired


@dataclass(frozen=True, kw_only=True)
class OutputConstrained:
    """Refute conjunctions of logit constraints on one box by intermediate bounds under each conjunction.

    At most ``passes`` sweeps over the ReLU layers, each bounding every unstable neuron with Adam steps on its
    slopes and on gamma (``iterations``; later passes ``warm_iterations`` from where the last one ended); the
    conjunctions are then bounded by alpha-CROWN with those bounds. Slow to converge (image 0 of
    mnist_mlp_256x3 at eps 0.05 needs ten passes), so a conjunction gets passes while each one raises its
    margin or narrows its bounds (a pass can narrow them and leave the margin where it was, and the next one
    refute the conjunction: mnist_fc 256x6 prop_7 at eps 0.03).
    """

    passes: int = 3
    iterations: int = 20
    lr: float = 0.1
    lr_gamma: float = 0.1
    lr_decay: float = 0.98
    final_iterations: int = 20
    warm_iterations: int = 10  # Adam steps per layer in later passes, which start where the last pass ended
    # a conjunction gets no more passes once one raises its margin by less than ``min_progress`` and narrows
    # its ReLU input bounds (in sum) by less than a share ``min_narrowing``
    min_progress: float = 0.05
    min_narrowing: float = 0.01
    deadline: Deadline | None = None

    def refute(self, network, lower: torch.Tensor, upper: torch.Tensor, A: torch.Tensor, b: torch.Tensor,
               prior: Bounds) -> torch.Tensor:
        """(G,) True for each conjunction ``A[g] y <= b[g]`` (A (G, m, n_out), b (G, m)) that holds nowhere in
        the box ``lower``/``upper`` (1, *input shape); ``prior`` holds sound bounds of that whole box (its
        ReLU input bounds are the start). Rows with b = +inf constrain nothing and are left out."""
        return self.bounds_under(network, lower, upper, A, b, prior)[0]

    def bounds_under(self, network, lower: torch.Tensor, upper: torch.Tensor, A: torch.Tensor, b: torch.Tensor,
                     prior: Bounds) -> tuple[torch.Tensor, Bounds]:
        """``refute``'s answer and, per conjunction g (one box each), ReLU input bounds that hold for every
        input of the box meeting ``A[g] y <= b[g]`` (and nowhere else)."""
        groups = A.shape[0]
        vacuous = ~torch.isfinite(b)
        A = torch.where(vacuous.unsqueeze(-1), 0.0, A)
        b_finite = torch.where(vacuous, 0.0, b)
        boxes = (lower.expand(groups, *lower.shape[1:]), upper.expand(groups, *upper.shape[1:]))
        dtype = prepare(network, *boxes, A).dtype
        pre_lower = [t.expand(groups, *t.shape[1:]).to(dtype, copy=True) for t in prior.pre_lower]
        pre_upper = [t.expand(groups, *t.shape[1:]).to(dtype, copy=True) for t in prior.pre_upper]
        refuted = prior.infeasible.expand(groups).clone()
        deadline = self.deadline or Deadline.never()
        final = AlphaCROWN(iterations=self.final_iterations, fixed_intermediate=True, optimize_upper=False,
                           beta=False, deadline=self.deadline)
        best = torch.full((groups,), -torch.inf, dtype=dtype)  # per conjunction, its best margin so far
        widths = torch.full((groups,), torch.inf, dtype=dtype)  # per conjunction, the sum of its bounds' widths
        stalled = torch.zeros(groups, dtype=torch.bool)
        last = _LastPass(groups)
        with torch.no_grad():  # the refine step turns gradients on for its own ascent
            for _ in range(self.passes):
                active = torch.nonzero(~(refuted | stalled)).flatten()  # refuted or stalled: no more passes
                if not len(active) or deadline.expired():
                    break
                problem = prepare(network, boxes[0][active], boxes[1][active], A[active])
                bounds = _as_prior(problem, [(l[active].flatten(1), u[active].flatten(1))
                                             for l, u in zip(pre_lower, pre_upper)], refuted[active])
                before = sweep(problem, bounds, DEFAULT_CHUNK, tighten=False)
                step = _UnderConstraint(problem.spec, b_finite[active], before, self, last, active)
                try:
                    result = sweep(problem, bounds, DEFAULT_CHUNK, tighten=True, deadline=deadline, refine=step)
                except DeadlineExpired:  # a pass cut short adds nothing; the last whole one stands
                    break
                bounds = _as_prior(problem, result.pre, result.infeasible)
                for i in range(len(pre_lower)):
                    pre_lower[i][active], pre_upper[i][active] = bounds.pre_lower[i], bounds.pre_upper[i]
                out = final.compute(network, problem.lower, problem.upper, C=A[active], prior=bounds)
                refuted[active] = out.infeasible | (out.output_lower > b[active]).any(dim=1)
                margin = (out.output_lower - b[active]).max(dim=1).values
                width = sum((u - l).flatten(1).sum(dim=1) for l, u in zip(bounds.pre_lower, bounds.pre_upper))
                stalled[active] = ((margin < best[active] + self.min_progress)
                                   & (width > (1 - self.min_narrowing) * widths[active]))
                best[active], widths[active] = torch.maximum(best[active], margin), width
        return refuted, Bounds.of_relu_inputs(pre_lower, pre_upper, refuted.clone(), A.shape[1], "output-constrained")


def _as_prior(problem: Problem, pre: list, infeasible: torch.Tensor) -> Bounds:
    """Flat (lower, upper) per ReLU layer as Bounds of the problem's shapes and rows."""
    batch = problem.batch
    shapes = [problem.shapes[p + 1] for p in problem.relu_positions]
    return Bounds.of_relu_inputs([l.reshape(batch, *s) for (l, _), s in zip(pre, shapes)],
                                 [u.reshape(batch, *s) for (_, u), s in zip(pre, shapes)], infeasible, problem.rows,
                                 "output-constrained")


class _UnderConstraint:
    """``sweep``'s refine step: the bounds of one ReLU layer's unstable inputs on each box's set S.

    Each row is ``+-e_j`` at the layer plus ``gamma . (A y - b)`` at the logits. The layers after it are
    crossed with the relaxations of the previous pass (``before``, sound on S), the earlier ones with this
    pass's; each row has its own slopes in every layer and its own gamma (G, R, m), all kept best per row.
    """

    def __init__(self, A: torch.Tensor, b: torch.Tensor, before, settings: OutputConstrained, last: "_LastPass",
                 active: torch.Tensor) -> None:
        self.A, self.b, self.before, self.settings = A, b, before, settings
        self.last, self.active = last, active  # active: which of the last pass's boxes these are
        self.out_rounding = output_rounding(A, before.output) + b.abs()  # (G, m): of the logits and of A y

    def __call__(self, problem: Problem, node: int, lower, upper, forward_magnitude, relaxations: dict):
        unstable = (lower < 0) & (upper > 0)
        needed = torch.nonzero(unstable.any(dim=0)).flatten()
        if needed.numel() == 0:
            return lower, upper
        s = self.settings
        k, groups, m = needed.numel(), problem.batch, self.A.shape[1]
        rows = torch.arange(k)
        E = torch.zeros(2 * k, lower.shape[1], dtype=lower.dtype)
        E[rows, needed] = 1
        E[rows + k, needed] = -1
        current = {**self.before.relaxations, **relaxations}  # later layers: the previous pass's
        optimised = [pos for pos, r in current.items() if isinstance(r, Relaxation) and bool((r.upper_bias > 0).any())]
        slopes = {pos: current[pos].lower_slope.expand(groups, 2 * k, -1).clone() for pos in optimised}
        masks = {pos: (current[pos].upper_bias > 0).unsqueeze(1).to(lower.dtype) for pos in optimised}
        gamma = torch.zeros(groups, 2 * k, m, dtype=lower.dtype)
        warm = self.last.recall(node, self.active, needed, slopes, masks, gamma)
        for t in (*slopes.values(), gamma):
            t.requires_grad_()
        adam = _Adam([*slopes.values(), gamma], [s.lr] * len(slopes) + [s.lr_gamma], s.lr_decay)
        iterations = s.warm_iterations if warm else s.iterations
        node_rounding = forward_magnitude[:, needed].repeat(1, 2)
        last = len(problem.network.layers) - 1
        best = None
        with torch.enable_grad():
            for step in range(s.iterations + 1):
                relax = dict(current)
                relax.update({pos: current[pos]._replace(lower_slope=slope) for pos, slope in slopes.items()})
                A_out = gamma @ self.A  # (G, 2k, n_out)
                start = LinearBound(A_out, -(gamma * self.b.unsqueeze(1)).sum(-1),
                                    torch.zeros(groups, 2 * k, dtype=lower.dtype))
                bound = back_substitute(problem, last, relax, start, inject={node: E})
                value, magnitude = concretize(bound, problem.lower.flatten(1), problem.upper.flatten(1))
                rounding = node_rounding + (gamma * self.out_rounding.unsqueeze(1)).sum(-1)
                result = widen_lower(value, magnitude + rounding)
                best = result.detach() if best is None else torch.maximum(best, result.detach())
                if step == iterations or (s.deadline is not None and s.deadline.expired()):
                    break
                tensors = [*slopes.values(), gamma]
                grads = torch.autograd.grad(result.sum(), tensors, allow_unused=True)
                grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors)]
                adam.ascend([g * masks[pos] for g, pos in zip(grads, slopes)] + [grads[-1]])
                with torch.no_grad():
                    for slope in slopes.values():
                        slope.clamp_(0, 1)
                    gamma.clamp_(min=0)
        self.last.keep(node, self.active, lower.shape[1], needed, slopes, gamma.detach())
        lower, upper = lower.clone(), upper.clone()
        update = unstable[:, needed]
        lower[:, needed] = torch.where(update, torch.maximum(lower[:, needed], best[:, :k]), lower[:, needed])
        upper[:, needed] = torch.where(update, torch.minimum(upper[:, needed], -best[:, k:]), upper[:, needed])
        return lower, upper


class _LastPass:
    """Per ReLU layer, the gamma and slopes each row (+-e_j) ended the last pass with, for every box: where the
    next pass starts. ``active`` names the boxes a pass works on (refuted and stalled ones drop out)."""

    def __init__(self, boxes: int) -> None:
        self.boxes = boxes
        self.layers: dict = {}  # node -> {"known": (width,) rows kept, "gamma": ..., "slopes": {pos: ...}}

    def recall(self, node: int, active: torch.Tensor, needed: torch.Tensor, slopes: dict, masks: dict,
               gamma: torch.Tensor) -> bool:
        """Start ``slopes`` and ``gamma`` (rows +-e_j for j in ``needed``) where the last pass left them, for the
        rows it optimised, in place; True when it did. A slope is taken only where its neuron is still unstable
        (``masks``): a stable one keeps its exact relaxation."""
        saved = self.layers.get(node)
        if saved is None:
            return False
        groups, rows = len(active), 2 * needed.numel()
        known = saved["known"][needed].repeat(2).view(1, rows, 1)
        gamma.copy_(torch.where(known, saved["gamma"][active][:, :, needed].reshape(groups, rows, -1), gamma))
        for pos, slope in slopes.items():
            if pos in saved["slopes"]:
                old = saved["slopes"][pos][active][:, :, needed].reshape(groups, rows, -1)
                slope.copy_(torch.where(known & (masks[pos] > 0), old, slope))
        return bool(known.any())

    def keep(self, node: int, active: torch.Tensor, width: int, needed: torch.Tensor, slopes: dict,
             gamma: torch.Tensor) -> None:
        """Remember this pass's final gamma and slopes of the rows of ``needed`` for the next pass."""
        k = needed.numel()
        saved = self.layers.setdefault(node, {"known": torch.zeros(width, dtype=torch.bool), "slopes": {}})
        saved["known"][needed] = True
        pairs = [("gamma", saved, gamma)] + [(pos, saved["slopes"], slope.detach()) for pos, slope in slopes.items()]
        for key, store, value in pairs:
            if key not in store:
                store[key] = torch.zeros(self.boxes, 2, width, value.shape[-1], dtype=value.dtype)
            kept = store[key][active]
            kept[:, :, needed] = value.reshape(len(active), 2, k, -1)
            store[key][active] = kept
