"""Linear bounds A @ x + bias carried backwards through the affine layer kinds, and their value on a box."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from certprune.bounds.base import TINY


class LinearBound(NamedTuple):
    """Rows of lower bounds ``A @ x + bias`` on a flat layer vector x.

    ``A`` is (R, N) when the same for every box (before the first ReLU is crossed) or (B, R, N); ``bias`` is
    (R,) or (B, R). ``magnitude`` is the sum of |terms| added into ``bias`` so far (for the rounding margin).
    """

    A: torch.Tensor
    bias: torch.Tensor
    magnitude: torch.Tensor

    @staticmethod
    def of(A: torch.Tensor) -> "LinearBound":
        zero = torch.zeros(A.shape[:-1], dtype=A.dtype)
        return LinearBound(A, zero, zero)


def _dense(layer, bound: LinearBound, shape_in, relaxation=None) -> LinearBound:
    # A (W x + b) = (A W) x + A b
    A = bound.A
    return LinearBound(A @ layer.weight, bound.bias + A @ layer.bias, bound.magnitude + A.abs() @ layer.bias.abs())


def _conv2d(layer, bound: LinearBound, shape_in, relaxation=None) -> LinearBound:
    # The transpose of a convolution is conv_transpose2d with the same stride, padding and dilation; the
    # output padding restores the input rows and columns the forward stride skipped.
    A = bound.A
    c_out, h_out, w_out = layer.output_shape(tuple(shape_in))
    padding = []
    for i in range(2):
        k = layer.dilation[i] * (layer.weight.shape[2 + i] - 1) + 1
        covered = ((h_out, w_out)[i] - 1) * layer.stride[i] - 2 * layer.padding[i] + k
        padding.append(shape_in[1 + i] - covered)
    lead = A.shape[:-1]
    back = F.conv_transpose2d(A.reshape(-1, c_out, h_out, w_out), layer.weight, None, layer.stride,
                              layer.padding, tuple(padding), layer.groups, layer.dilation)
    per_channel = A.reshape(*lead, c_out, h_out * w_out).sum(dim=-1)
    per_channel_abs = A.abs().reshape(*lead, c_out, h_out * w_out).sum(dim=-1)
    return LinearBound(back.reshape(*lead, -1), bound.bias + per_channel @ layer.bias,
                       bound.magnitude + per_channel_abs @ layer.bias.abs())


def _affine(layer, bound: LinearBound, shape_in, relaxation=None) -> LinearBound:
    A, scale, shift = bound.A, layer.scale.flatten(), layer.shift.flatten()
    return LinearBound(A * scale, bound.bias + A @ shift, bound.magnitude + A.abs() @ shift.abs())


def _flatten(layer, bound: LinearBound, shape_in, relaxation=None) -> LinearBound:
    return bound  # bounds are already on the flat (row-major) vector


def _transpose(layer, bound: LinearBound, shape_in, relaxation=None) -> LinearBound:
    # Output d is input perm[d]: the coefficients go back through the inverse permutation.
    A = bound.A
    lead = A.shape[:-1]
    out = A.reshape(*lead, *layer.output_shape(tuple(shape_in)))
    inverse = [layer.perm.index(d) for d in range(len(layer.perm))]
    back = out.permute(*range(len(lead)), *(len(lead) + d for d in inverse))
    return LinearBound(back.reshape(*lead, -1), bound.bias, bound.magnitude)


def _pad(layer, bound: LinearBound, shape_in, relaxation=None) -> LinearBound:
    # Padded zeros contribute nothing: keep the coefficients of the original entries.
    A = bound.A
    lead = A.shape[:-1]
    out = A.reshape(*lead, *layer.output_shape(tuple(shape_in)))
    index = (Ellipsis, *(slice(b, b + d) for b, d in zip(layer.before, shape_in)))
    return LinearBound(out[index].reshape(*lead, -1), bound.bias, bound.magnitude)


# Backward rules (layer, bound on its output, its input shape, unused relaxation) -> bound on its input.
AFFINE_RULES = {"dense": _dense, "conv2d": _conv2d, "affine": _affine, "flatten": _flatten, "reshape": _flatten,
                "transpose": _transpose, "pad": _pad}


def _add(layer, A: torch.Tensor, shapes_in) -> list[torch.Tensor]:
    return [A, A]  # y = a + b: the same coefficients on both


def _concat(layer, A: torch.Tensor, shapes_in) -> list[torch.Tensor]:
    lead = A.shape[:-1]
    out = A.reshape(*lead, *layer.output_shape(*shapes_in))
    sizes = [shape[layer.axis] for shape in shapes_in]
    parts = out.split(sizes, dim=len(lead) + layer.axis)
    return [part.reshape(*lead, -1) for part in parts]


# Backward rules of joins (layer, coefficients on its output, its input shapes) -> coefficients per input.
JOIN_RULES = {"add": _add, "concat": _concat}


def concretize(bound: LinearBound, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum over the box [lower, upper] (B, N) of each row, and the sum of |terms| of that evaluation.

    min over the box of A x = A c - |A| r with center c and radius r; returns (B, R) values and magnitudes.
    """
    center, radius = (lower + upper) / 2, (upper - lower) / 2
    abs_max = torch.maximum(lower.abs(), upper.abs())
    A = bound.A
    A_abs = A.abs()
    if A.dim() == 2:
        value = center @ A.T
        spread, size = (torch.stack([radius, abs_max], dim=1) @ A_abs.T).unbind(dim=1)
    else:  # multiply and sum beats a batch of matrix-vector products here
        value = (A * center.unsqueeze(-2)).sum(dim=-1)
        spread, size = (A_abs * radius.unsqueeze(-2)).sum(dim=-1), (A_abs * abs_max.unsqueeze(-2)).sum(dim=-1)
    tiny = TINY[A.dtype]  # the centre and radius underflow on a box near 0, and the products below 2^-126
    return value - spread + bound.bias, size + tiny * (A_abs.sum(dim=-1) + 2 * A.shape[-1] + 1) + bound.magnitude
