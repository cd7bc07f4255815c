"""Interval bound propagation: push a box through the network's graph layer by layer, one interval rule per kind."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from certprune.bounds.base import (TINY, BoundMethod, Bounds, Problem, check_kinds, finish, settle, widen_lower,
                                   widen_upper)


class Interval(NamedTuple):
    """Elementwise bounds (B, *shape) of one layer's output.

    ``magnitude`` bounds the sum of |terms| of the forward pass since the last ReLU (propagated through the
    affine layers of the segment); it sizes the rounding margin of this and of later bounds.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    magnitude: torch.Tensor

    @staticmethod
    def of_box(lower: torch.Tensor, upper: torch.Tensor) -> "Interval":
        return Interval(lower, upper, torch.zeros_like(lower))

    def abs_max(self) -> torch.Tensor:
        return torch.maximum(self.lower.abs(), self.upper.abs())


def _from_center(center, radius, magnitude) -> Interval:
    # center +- radius, each side widened by the rounding margin of the step.
    return Interval(widen_lower(center - radius, magnitude), widen_upper(center + radius, magnitude), magnitude)


def _dense(layer, x: Interval) -> Interval:
    w_abs = layer.weight.abs()
    center = F.linear((x.lower + x.upper) / 2, layer.weight, layer.bias)
    radius = F.linear((x.upper - x.lower) / 2, w_abs)
    tiny = TINY[w_abs.dtype]
    magnitude = F.linear(x.abs_max() + x.magnitude + tiny, w_abs, layer.bias.abs() + (2 * w_abs.shape[1] + 1) * tiny)
    return _from_center(center, radius, magnitude)


def _conv2d(layer, x: Interval) -> Interval:
    w_abs = layer.weight.abs()
    args = (layer.stride, layer.padding, layer.dilation, layer.groups)
    center = F.conv2d((x.lower + x.upper) / 2, layer.weight, layer.bias, *args)
    radius = F.conv2d((x.upper - x.lower) / 2, w_abs, None, *args)
    tiny = TINY[w_abs.dtype]
    magnitude = F.conv2d(x.abs_max() + x.magnitude + tiny, w_abs,
                         layer.bias.abs() + (2 * layer.weight[0].numel() + 1) * tiny, *args)
    return _from_center(center, radius, magnitude)


def _affine(layer, x: Interval) -> Interval:
    # A negative scale swaps the ends; the center-radius form handles both signs.
    scale_abs = layer.scale.abs()
    center = (x.lower + x.upper) / 2 * layer.scale + layer.shift
    radius = (x.upper - x.lower) / 2 * scale_abs
    tiny = TINY[scale_abs.dtype]
    magnitude = (x.abs_max() + x.magnitude + tiny) * scale_abs + layer.shift.abs() + 3 * tiny
    return _from_center(center, radius, magnitude)


def _flatten(layer, x: Interval) -> Interval:
    return Interval(*(t.flatten(start_dim=1) for t in x))


def _relu(layer, x: Interval) -> Interval:
    # Exact in floating point; the forward error of the input is accounted for where it was made.
    return Interval(x.lower.clamp(min=0), x.upper.clamp(min=0), torch.zeros_like(x.magnitude))


def _add(layer, a: Interval, b: Interval) -> Interval:
    # One rounding of the sum: its terms are both operands with their own forward error so far.
    magnitude = a.abs_max() + a.magnitude + b.abs_max() + b.magnitude + 3 * TINY[a.lower.dtype]
    return Interval(widen_lower(a.lower + b.lower, magnitude), widen_upper(a.upper + b.upper, magnitude), magnitude)


def _concat(layer, *xs: Interval) -> Interval:
    return Interval(*(torch.cat(parts, dim=layer.axis + 1) for parts in zip(*xs)))


def _elementwise_map(layer, x: Interval) -> Interval:
    # Reshape, Transpose and zero Pad move values without arithmetic: exact, the same map on each part.
    return Interval(*(layer.forward(t) for t in x))


def _maxpool(layer, x: Interval) -> Interval:
    # max is monotone and exact in floating point; the error of a window's inputs bounds that of its max.
    return Interval(*(layer.forward(t) for t in x))


RULES = {"dense": _dense, "conv2d": _conv2d, "affine": _affine, "flatten": _flatten, "relu": _relu,
         "add": _add, "concat": _concat, "reshape": _elementwise_map, "transpose": _elementwise_map,
         "pad": _elementwise_map, "maxpool": _maxpool}


def interval_step(layer, *xs: Interval) -> Interval:
    """One layer of interval arithmetic on the intervals of what it reads (kinds checked by check_kinds)."""
    return RULES[layer.kind](layer, *xs)


def output_rounding(spec: torch.Tensor, out: Interval) -> torch.Tensor:
    """(B, K) sum of |terms| behind spec @ y at the logits ``out``: the logits' own forward pass and the product,
    underflow included (``base.TINY``); the rounding margin of every bound on spec @ y. spec (K, n) or (B, K, n)."""
    tiny = TINY[spec.dtype]
    terms = out.abs_max().flatten(start_dim=1) + out.magnitude.flatten(start_dim=1) + tiny
    return (spec.abs() @ terms.unsqueeze(-1)).squeeze(-1) + (2 * spec.shape[-1] + 1) * tiny


def spec_interval(spec: torch.Tensor, out: Interval) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bounds of spec @ y for y in the output interval, widened; spec (K, n) or (B, K, n)."""
    lower, upper = out.lower.flatten(start_dim=1), out.upper.flatten(start_dim=1)
    center, radius = ((lower + upper) / 2).unsqueeze(-1), ((upper - lower) / 2).unsqueeze(-1)
    value = (spec @ center).squeeze(-1)
    spread = (spec.abs() @ radius).squeeze(-1)
    magnitude = output_rounding(spec, out)
    return widen_lower(value - spread, magnitude), widen_upper(value + spread, magnitude)


@dataclass(frozen=True, kw_only=True)
class IBP(BoundMethod):
    """Interval bound propagation (Gowal et al. 2018): cheap, loose, the start of every cascade."""

    name = "ibp"

    def run(self, problem: Problem, prior: Bounds | None) -> Bounds:
        check_kinds(problem.network, RULES, "IBP")
        values = [Interval.of_box(problem.lower, problem.upper)]
        infeasible = torch.zeros(problem.batch, dtype=torch.bool)
        pre = []
        for layer, sources in zip(problem.network.layers, problem.network.inputs):
            xs = [values[j + 1] for j in sources]
            if layer.kind == "relu":
                (x,) = xs
                lower, upper = settle(problem, len(pre), x.lower.flatten(1), x.upper.flatten(1), prior, infeasible)
                pre.append((lower, upper))
                xs = [Interval(lower.view(x.lower.shape), upper.view(x.upper.shape), x.magnitude)]
            values.append(interval_step(layer, *xs))
        out_lower, out_upper = spec_interval(problem.spec, values[-1])
        return finish(problem, pre, out_lower, out_upper, infeasible, prior, self.name)
