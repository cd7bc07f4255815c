"""Branching heuristics: which input dimension to bisect, which ReLU to split."""
from __future__ import annotations

from typing import Callable

import torch

from certprune.bab.domains import bisect
from certprune.network import Network

COEFFICIENT_FLOOR = 1e-3  # |a_j| below this counts as this: a width the bound ignores still gets split sometime
LOOKAHEAD_DIMS = 3  # the best dimensions by the coefficient score whose halves are bounded before choosing


def choose_input_dims_sb(lower: torch.Tensor, upper: torch.Tensor, coefficients: torch.Tensor, rows: torch.Tensor,
                         shortfall: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Per box, the flat input dimension to halve.

    First a score per dimension: the sum over the open ``rows`` (K,) bool of |a_rj| * width_j, with
    ``coefficients`` (B, K, n) those of the linear lower bounds (CROWN's). The bound of a row is
    a.c - |a|.w/2 + d over the box: dimension j's width takes |a_j| w_j / 2 off it (the "smart branching" of
    alpha-beta-CROWN's input split). With ``shortfall(lower, upper) -> (B,)`` (how far boxes' bounds are from a
    proof: ``shortfall_of``), the ``LOOKAHEAD_DIMS`` best-scored dimensions are then tried: both halves
    bounded, and the dimension whose halves fall shortest in sum wins (ties: the better score). The score
    alone picks well on average but sometimes keeps halving a dimension that never tightens the relaxation.
    Measured on ACAS Xu (boxes bounded to a proof): prop_1 on 3_3 1,297 by the score, 393 with the
    look-ahead; on 3_5 6,199 and 689; on 2_2 over 400,000 and 673, where the gradient at the centre
    (``choose_input_dims``) left 3_3 and 2_2 undecided after 400,000; prop_3 on 1_1 7,344 (the gradient:
    2,927; the score alone, or a look-ahead on the proof margin instead of the shortfall: over 200,000).
    """
    return lookahead_choice(lower, upper, coefficients, rows, shortfall)[0]


def lookahead_choice(lower: torch.Tensor, upper: torch.Tensor, coefficients: torch.Tensor, rows: torch.Tensor,
                     shortfall: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
    """``choose_input_dims_sb``'s dimensions (B,), and per box which of the ``shortfall`` calls (in call
    order: one per candidate rank) tried them, so that the caller can keep the bounds it computed there
    (None without ``shortfall``)."""
    width = (upper - lower).flatten(1)
    per_row = coefficients[:, rows].abs().clamp_min(COEFFICIENT_FLOOR)
    score = (per_row * width.unsqueeze(1)).sum(dim=1)
    score = torch.where(width > 0, score, -1.0)  # a fixed coordinate cannot be halved
    if shortfall is None:
        return score.argmax(dim=1), None
    count = min(LOOKAHEAD_DIMS, int((width > 0).sum(dim=1).min()))
    candidates = score.topk(max(count, 1), dim=1).indices  # (B, k)
    gains = []
    for column in candidates.unbind(dim=1):
        halves = shortfall(*bisect(lower, upper, column))  # first halves, then second halves
        gains.append(halves[: len(lower)] + halves[len(lower):])
    best = torch.stack(gains, dim=1).argmax(dim=1)
    return candidates.gather(1, best.unsqueeze(1)).squeeze(1), best


def shortfall_of(output_lower: torch.Tensor, rhs: torch.Tensor, refuted: torch.Tensor) -> torch.Tensor:
    """(B,) how far bounds are from a proof, <= 0: the sum over rows of ``lower - rhs`` where negative, 0 where
    ``refuted``. Unlike the proof margin (the best row of the worst conjunction) it sees progress on every row
    of a conjunction, any one of which may end up proving it. Rows that never prove (rhs +inf) are left out."""
    gap = (output_lower - rhs).clamp_max(0)[:, torch.isfinite(rhs)].sum(dim=1)
    return torch.where(refuted, 0.0, gap)


def choose_input_dims(network: Network, lower: torch.Tensor, upper: torch.Tensor, C: torch.Tensor,
                      rhs: torch.Tensor, groups: list[slice]) -> torch.Tensor:
    """Per box, the flat input dimension with the largest smear |d(C y)/dx_j| * width_j.

    The smear estimates how much each dimension's width loosens the specification's linear bounds
    (the input-splitting heuristic of ReluVal and Neurify); it is summed over the specification rows.
    """
    center = ((lower + upper) / 2).detach().requires_grad_(True)
    out = network(center) @ C.T
    smear = torch.zeros_like(center)
    for row in range(out.shape[1]):
        (grad,) = torch.autograd.grad(out[:, row].sum(), center, retain_graph=row + 1 < out.shape[1])
        smear += grad.abs()
    width = (upper - lower).flatten(1)
    score = smear.flatten(1) * width
    # A box whose gradient vanishes (all ReLUs dead at the centre) still has to shrink: fall back to width.
    flat = score.sum(dim=1) <= 0
    score[flat] = width[flat]
    return score.argmax(dim=1)


def choose_relus(scores, bounds, unstable: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per domain, the (layer, flat neuron) to split among its ``unstable`` (B, N_i) masks of unsplit unstable
    neurons: the largest ``scores`` (per layer (B, N_i), the BaBSR/FSB intercept score of the optimised bound:
    the intercept of the neuron's upper relaxation times its backward coefficient, see
    ``bounds.alpha._scores``). Where every score is zero (no open row depends on an unstable neuron through
    its upper line), the loosest triangle relaxation, largest u * (-l) / (u - l), decides instead.
    """
    if not bool(torch.cat(unstable, dim=1).any(dim=1).all()):
        raise ValueError("no unstable neuron left to split")
    return flat_to_layer(candidate_relus(scores, bounds, unstable, 1)[:, 0], [m.shape[1] for m in unstable])


def candidate_relus(scores, bounds, unstable: list[torch.Tensor], k: int) -> torch.Tensor:
    """(B, k) flat neuron indices (over the layers' concatenation) of each domain's ``k`` best candidates in
    ``choose_relus``'s order: positive scores first, largest first, then the loosest triangles. Where a domain
    has fewer than ``k`` unstable neurons the last columns repeat its best one."""
    score = torch.cat([torch.where(m, s.flatten(1), -1.0) for s, m in zip(scores, unstable)], dim=1)
    loose = torch.cat([torch.where(m, _intercept(bounds, i), -1.0) for i, m in enumerate(unstable)], dim=1)
    key = torch.where(score > 0, score + loose.amax(dim=1, keepdim=True) + 1, loose)
    value, index = key.topk(min(k, key.shape[1]), dim=1)
    return torch.where(value >= 0, index, index[:, :1])


def flat_to_layer(flat: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer, neuron within it) of flat indices over the concatenation of layers of ``sizes``."""
    sizes = torch.tensor(sizes)
    ends = sizes.cumsum(0)
    layer = torch.bucketize(flat.contiguous(), ends, right=True)
    return layer, flat - (ends - sizes)[layer]


def _intercept(bounds, layer: int) -> torch.Tensor:
    """(B, N): u * (-l) / (u - l), the most the triangle relaxation can overshoot the ReLU."""
    lo, up = bounds.pre_lower[layer].flatten(1), bounds.pre_upper[layer].flatten(1)
    return up * (-lo) / (up - lo).clamp_min(1e-12)
