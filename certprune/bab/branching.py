"""Branching heuristics: which input dimension to bisect, which ReLU to split."""
from __future__ import annotations

import torch

from certprune.network import Network


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
    score = torch.cat([torch.where(m, s.flatten(1), -1.0) for s, m in zip(scores, unstable)], dim=1)
    loose = torch.cat([torch.where(m, _intercept(bounds, i), -1.0) for i, m in enumerate(unstable)], dim=1)
    value, choice = score.max(dim=1)
    flat = torch.where(value > 0, choice, loose.argmax(dim=1))
    if not bool(torch.cat(unstable, dim=1).any(dim=1).all()):
        raise ValueError("no unstable neuron left to split")
    sizes = torch.tensor([m.shape[1] for m in unstable])
    ends = sizes.cumsum(0)
    layer = torch.bucketize(flat, ends, right=True)
    return layer, flat - (ends - sizes)[layer]


def _intercept(bounds, layer: int) -> torch.Tensor:
    """(B, N): u * (-l) / (u - l), the most the triangle relaxation can overshoot the ReLU."""
    lo, up = bounds.pre_lower[layer].flatten(1), bounds.pre_upper[layer].flatten(1)
    return up * (-lo) / (up - lo).clamp_min(1e-12)
