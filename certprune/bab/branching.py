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


def choose_relu(bounds, index: int, unstable: list[torch.Tensor]) -> tuple[int, int]:
    """The unsplit unstable neuron whose triangle relaxation is loosest: largest u * (-l) / (u - l).

    That intercept is the most the relaxation can overshoot the ReLU; splitting it removes the largest
    single source of looseness, a better guide than the widest interval.
    """
    best, choice = -1.0, None
    for layer, mask in enumerate(unstable):
        if not mask.any():
            continue
        lo = bounds.pre_lower[layer][index].flatten()
        up = bounds.pre_upper[layer][index].flatten()
        score = torch.where(mask, up * (-lo) / (up - lo).clamp_min(1e-12), torch.full_like(up, -1.0))
        value, neuron = score.max(dim=0)
        if float(value) > best:
            best, choice = float(value), (layer, int(neuron))
    if choice is None:
        raise ValueError("no unstable neuron left to split")
    return choice
