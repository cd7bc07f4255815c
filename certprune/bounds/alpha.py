"""alpha-CROWN with beta-CROWN split multipliers: CROWN's lower slopes and the Lagrange multipliers of the
ReLU split constraints optimised by gradient ascent on the output bounds (Xu et al. 2021, Wang et al. 2021)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from certprune.bounds.base import BoundMethod, Bounds, Problem, check_kinds, finish
from certprune.bounds.crown import (DEFAULT_CHUNK, RULES, Relaxation, Sweep, both_sides, neuron_states,
                                    output_bounds, sweep)
from certprune.bounds.ibp import spec_interval
from certprune.deadline import Deadline


class _Parameters:
    """The optimised quantities, one tensor (B, R, N) per ReLU layer position and bound row.

    alpha: lower slope of each unstable ReLU, any value in [0, 1] gives a valid lower line alpha * z <= relu(z).
    beta: multiplier >= 0 of each split constraint s * z >= 0 (s = +1 active, -1 inactive). For x in the
    subdomain, f(x) >= f(x) - sum beta s z, so a lower bound of the right side over the whole relaxed box
    bounds f on the subdomain; the term adds -beta * s to the coefficient of z when crossing the ReLU.
    """

    def __init__(self, problem: Problem, result: Sweep, rows: int, with_beta: bool) -> None:
        self.base = result.relaxations
        self.alpha, self.unstable, self.beta, self.signs = {}, {}, {}, {}
        for i, pos in enumerate(problem.relu_positions):
            lower, upper = result.pre[i]
            unstable = neuron_states(lower, upper)[2]
            if unstable.any():
                # Stable neurons keep CROWN's exact slope (0 or 1): their gradient is masked out below.
                start = self.base[pos].lower_slope.expand(-1, rows, -1)
                self.alpha[pos] = start.clone().requires_grad_()
                self.unstable[pos] = unstable.unsqueeze(1).to(problem.dtype)
            split = problem.splits[i]
            if with_beta and split is not None:
                self.beta[pos] = torch.zeros(problem.batch, rows, lower.shape[1], dtype=problem.dtype,
                                             requires_grad=True)
                self.signs[pos] = split.unsqueeze(1).to(problem.dtype)

    def groups(self, lr: float, lr_beta: float) -> list:
        groups = [{"params": list(self.alpha.values()), "lr": lr}]
        if self.beta:
            groups.append({"params": list(self.beta.values()), "lr": lr_beta})
        return groups

    @property
    def tensors(self) -> list:
        return [*self.alpha.values(), *self.beta.values()]

    def relaxations(self) -> dict:
        out = dict(self.base)
        for pos in set(self.alpha) | set(self.beta):
            base = self.base[pos]
            slope = self.alpha.get(pos, base.lower_slope)
            shift = -self.beta[pos] * self.signs[pos] if pos in self.beta else None
            out[pos] = Relaxation(slope, base.upper_slope, base.upper_bias, shift)
        return out

    def set_gradients(self, grads) -> None:
        for tensor, grad in zip(self.tensors, grads):
            tensor.grad = grad
        for pos, alpha in self.alpha.items():
            alpha.grad.mul_(self.unstable[pos])

    def project(self) -> None:
        with torch.no_grad():
            for alpha in self.alpha.values():
                alpha.clamp_(0, 1)
            for beta in self.beta.values():
                beta.clamp_(min=0)


@dataclass(frozen=True, kw_only=True)
class AlphaCROWN(BoundMethod):
    """alpha-CROWN (beta-CROWN when splits are given and ``beta``): intermediate bounds by CROWN, then the
    output bounds optimised over per-neuron, per-row lower slopes (and split multipliers) with Adam.

    ``iterations`` Adam steps with learning rates ``lr`` (alpha) and ``lr_beta``, each decayed by ``lr_decay``
    per step. The returned bound is the best one seen per element, starting from CROWN's (iteration 0), so it
    is never looser than CROWN. Without ``optimize_upper`` only lower bounds are optimised and upper bounds are
    CROWN's (half the work when only lower bounds matter, as in branch and bound). Once ``deadline`` has
    passed no further step is taken: the best bound so far is returned (every step's bound is sound).
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
    name = "alpha-crown"

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.lr <= 0 or self.lr_beta <= 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(f"invalid AlphaCROWN settings: {self}")

    def run(self, problem: Problem, prior: Bounds | None) -> Bounds:
        check_kinds(problem.network, RULES, "AlphaCROWN")
        result = sweep(problem, prior, self.chunk_elements, tighten=not (self.fixed_intermediate and prior is not None))
        k = problem.rows
        if self.optimize_upper:
            bound = self._optimise(problem, result, both_sides(problem.spec))
            out_lower, out_upper = bound[:, :k], -bound[:, k:]
        else:
            out_lower = self._optimise(problem, result, problem.spec)
            out_upper = -output_bounds(problem, result, result.relaxations, -problem.spec)
        interval_lower, interval_upper = spec_interval(problem.spec, result.output)
        out_lower, out_upper = torch.maximum(out_lower, interval_lower), torch.minimum(out_upper, interval_upper)
        return finish(problem, result.pre, out_lower, out_upper, result.infeasible, prior, self.name)

    def _optimise(self, problem: Problem, result: Sweep, spec: torch.Tensor) -> torch.Tensor:
        """Best widened lower bounds (B, R) of the rows of ``spec`` over the iterations."""
        params = _Parameters(problem, result, spec.shape[-2], self.beta)
        if not params.tensors or self.iterations == 0:
            return output_bounds(problem, result, result.relaxations, spec)
        optimizer = torch.optim.Adam(params.groups(self.lr, self.lr_beta), fused=True)
        schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, self.lr_decay)
        best = None
        with torch.enable_grad():
            for step in range(self.iterations + 1):
                bound = output_bounds(problem, result, params.relaxations(), spec)
                best = bound.detach() if best is None else torch.maximum(best, bound.detach())
                if step == self.iterations or (self.deadline is not None and self.deadline.expired()):
                    break
                # Rows and boxes are independent (own slopes and multipliers), so the sum ascends each.
                params.set_gradients(torch.autograd.grad(-bound.sum(), params.tensors))
                optimizer.step()
                params.project()
                schedule.step()
        return best
