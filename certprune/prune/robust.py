"""Losses from differentiable bounds: IBP and CROWN-IBP margin bounds, robust cross entropy, the NRS term.

Certified training (Gowal et al. 2018; Zhang et al. 2020, CROWN-IBP) minimises an upper bound of the
cross entropy over each input box. With ``m_j = y_label - y_j`` the logit margins and ``l_j`` a lower bound
of ``m_j`` on the box, the worst-case cross entropy is at most ``log(1 + sum_j exp(-l_j))``, the cross
entropy of the logits ``(0, -l_1, ..., -l_{K-1})`` for class 0 (for one logit with sign s = +-1, the
rows of ``metrics.margin_spec``, it is the logistic loss of ``l``). IBP gives ``l`` by interval arithmetic
(the last layer folded with the margin rows); CROWN-IBP carries the margin rows back to the input through
the project's CROWN rules (``certprune.bounds.crown.RULES``) with every ReLU relaxed on its IBP bounds.

The bounds are computed on the module's own tensors, in the autograd graph, and are not widened for
floating-point rounding: they train, they do not prove.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from certprune.bounds.crown import RULES, relax
from certprune.bounds.linear import LinearBound, concretize
from certprune.errors import UnsupportedLayerError
from certprune.network import Affine, Dense, ReLU
from certprune.prune.metrics import margin_spec
from certprune.prune.module import NetworkModule, interval_pass, interval_step
from certprune.prune.structure import prunable_layers

NRS_C = 1e-8  # the constant c of -tanh(1 + l u / (gamma^2 + c)) (the reference's auto_LiRPA script)


def margin_lower_bounds(module: NetworkModule, lower: torch.Tensor, upper: torch.Tensor, y: torch.Tensor,
                        crown_share: float = 0.0) -> tuple[torch.Tensor, list]:
    """Lower bounds (B, K) of the margins of label ``y`` over the boxes, and the IBP bounds of every ReLU input.

    The margin bounds are ``crown_share * CROWN-IBP + (1 - crown_share) * IBP`` (CROWN-IBP's mixing; both
    are sound, so any convex combination is).
    """
    C = margin_spec(y, math.prod(module.template.output_shape)).to(lower.dtype)
    pre, last_inputs = interval_pass(module, lower, upper)
    bound = ibp_spec(module, last_inputs, C)
    if crown_share > 0:
        bound = crown_share * crown_ibp_spec(module, lower, upper, C, pre) + (1 - crown_share) * bound
    return bound, pre


def ibp_spec(module: NetworkModule, last_inputs: list, C: torch.Tensor) -> torch.Tensor:
    """Lower bounds (B, K) of ``C @ logits`` from the intervals (center, radius) of the last layer's inputs.

    A Dense last layer is merged with C first (``C W`` on the interval is tighter than C on W's interval)."""
    last = module.layer(len(module.template.layers) - 1)
    if isinstance(last, Dense):
        (center, radius), = last_inputs
        weight, bias = C @ last.weight, C @ last.bias
    else:
        center, radius = interval_step(last, *last_inputs)
        weight, bias = C, torch.zeros(C.shape[:-1], dtype=C.dtype)
    center, radius = center.flatten(1)[:, :, None], radius.flatten(1)[:, :, None]
    return (weight @ center).squeeze(-1) + bias - (weight.abs() @ radius).squeeze(-1)


def crown_ibp_spec(module: NetworkModule, lower: torch.Tensor, upper: torch.Tensor, C: torch.Tensor,
                   pre: list) -> torch.Tensor:
    """Lower bounds (B, K) of ``C @ logits``: C carried back to the input by the CROWN rules, each ReLU relaxed
    (triangle upper line, adaptive lower slope) on its bounds ``pre`` (IBP's, for CROWN-IBP)."""
    network = module.template
    if not network.is_chain:
        raise UnsupportedLayerError("the CROWN-IBP loss supports chains of layers; use the IBP loss for graphs")
    shapes = network.shapes()
    relus = [i for i, layer in enumerate(network.layers) if isinstance(layer, ReLU)]
    relaxations = {i: relax(lo.flatten(1), hi.flatten(1)) for i, (lo, hi) in zip(relus, pre)}
    bound = LinearBound.of(C)
    for index in range(len(network.layers) - 1, -1, -1):
        layer = module.layer(index)
        bound = RULES[layer.kind](layer, bound, shapes[index], relaxations.get(index))
    value, _ = concretize(bound, lower.flatten(1), upper.flatten(1))
    return value


def robust_cross_entropy(margin_lower: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of log(1 + sum_j exp(-l_j)): an upper bound of the cross entropy on each box."""
    logits = torch.cat([torch.zeros_like(margin_lower[:, :1]), -margin_lower], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))


def nrs(lower: torch.Tensor, upper: torch.Tensor, gamma: torch.Tensor | None = None, c: float = NRS_C) -> torch.Tensor:
    """The neuron-stability value -tanh(1 + l u / (gamma^2 + c)), elementwise (gamma 1 where None).

    Near -0.76 to -1 for a stable ReLU (l u > 0), positive for a very unstable one (l u < -gamma^2); dividing
    by gamma^2 measures l and u at the scale before the BatchNorm that multiplies by gamma.
    """
    scale = 1.0 if gamma is None else gamma.detach() ** 2
    return -torch.tanh(1 + lower * upper / (scale + c))


def relu_gammas(module: NetworkModule) -> list[torch.Tensor | None]:
    """Per ReLU layer, the BatchNorm scale of each of its inputs (flat, per sample), or None where no Affine
    lies between the unit's producer and the ReLU: the scale of the last such Affine, detached."""
    shapes = module.template.shapes()
    gammas: list[torch.Tensor | None] = [None] * len(module.template.relu_sizes())
    for info in prunable_layers(module.template):
        affines = [i for i in range(info.producer + 1, info.relu) if isinstance(module.template.layers[i], Affine)]
        if affines:
            scale = module.layer(affines[-1]).scale.detach()
            gammas[info.relu_ordinal] = scale.expand(shapes[affines[-1]]).reshape(-1)
    return gammas


def nrs_loss(module: NetworkModule, pre: list, c: float = NRS_C) -> torch.Tensor:
    """NRS regulariser: the mean of ``nrs`` over every ReLU input of the batch (gamma from ``relu_gammas``)."""
    gammas = relu_gammas(module)
    terms = [nrs(lo.flatten(1), hi.flatten(1), gamma, c) for (lo, hi), gamma in zip(pre, gammas)]
    return torch.cat(terms, dim=1).mean() if terms else torch.zeros(())
