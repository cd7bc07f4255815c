"""How far a float32 evaluation of a network can stray from its exact real value, over a box.

Exact back ends (MILP, Z3) reason about the real-valued network, but the model that must be trusted runs
in float32 (onnxruntime). An exact ``unsat`` therefore proves the float32 model only when the question was
asked with a clearance at least this error. The bound is the classical one for sums: a float32 dot product
of ``n`` terms plus a bias differs from the exact one by at most ``gamma(n + 1) * sum |terms|`` with
``gamma(k) = k u / (1 - k u)`` and ``u = 2^-24`` (any summation order, fused or not). Errors already in a
layer's input pass through ``|W|``; ReLU is 1-Lipschitz and keeps them. Magnitudes come from interval
bounds of the exact values plus the error so far.

``SPARE`` extra terms per sum and the factor ``SAFETY`` cover what our Network does not see of the ONNX
graph: weights rounded once more when BatchNorm or normalisation was folded into them, and the few
extra roundings of an unfolded elementwise step.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from certprune.errors import UnsupportedLayerError
from certprune.network import Network
from certprune.realcheck import may_underflow

UNIT_ROUNDOFF = 2.0**-24  # float32
# Below float32's normal range a product is rounded by an absolute amount, up to 2^-150 with IEEE gradual
# underflow (onnxruntime's default; sums are exact there), which gamma's relative bound does not cover: per
# output of an affine step at most UNDERFLOW = 2^-149 times (2n + 1), and sum |w| more as slack.
UNDERFLOW = 2.0**-149
SPARE = 8
SAFETY = 2.0


def gamma(terms: int) -> float:
    k = (terms + 1 + SPARE) * UNIT_ROUNDOFF
    return SAFETY * k / (1.0 - k)


def forward_error(network: Network, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """(B, n_out) float64 bound on |float32 logits - exact logits| for every input in each box (B, *shape)."""
    for index, layer in enumerate(network.layers):
        if layer.kind not in RULES:
            raise UnsupportedLayerError(f"forward_error has no rule for layer kind '{layer.kind}' (layer {index})")
    net = network.to(torch.float64)
    values = [(lower.double(), upper.double(), torch.zeros_like(lower, dtype=torch.float64))]
    for layer, sources in zip(net.layers, net.inputs):
        values.append(RULES[layer.kind](layer, *(values[j + 1] for j in sources)))
    return values[-1][2].flatten(1)


def _dense(layer, value):
    lo, hi, error = value
    w_abs = layer.weight.abs()
    size = torch.maximum(lo.abs(), hi.abs()) + error
    n = layer.weight.shape[1]
    new_error = F.linear(error, w_abs) + gamma(n) * F.linear(size, w_abs, layer.bias.abs()) \
        + UNDERFLOW * (w_abs.sum(dim=1) + 2 * n + 1)
    center = F.linear((lo + hi) / 2, layer.weight, layer.bias)
    radius = F.linear((hi - lo) / 2, w_abs)
    return center - radius, center + radius, new_error


def _conv2d(layer, value):
    lo, hi, error = value
    w_abs = layer.weight.abs()
    args = (layer.stride, layer.padding, layer.dilation, layer.groups)
    size = torch.maximum(lo.abs(), hi.abs()) + error
    terms = layer.weight[0].numel()
    new_error = F.conv2d(error, w_abs, None, *args) + gamma(terms) * F.conv2d(size, w_abs, layer.bias.abs(), *args) \
        + UNDERFLOW * (w_abs.sum(dim=(1, 2, 3)) + 2 * terms + 1)[:, None, None]
    center = F.conv2d((lo + hi) / 2, layer.weight, layer.bias, *args)
    radius = F.conv2d((hi - lo) / 2, w_abs, None, *args)
    return center - radius, center + radius, new_error


def _affine(layer, value):
    lo, hi, error = value
    scale_abs = layer.scale.abs()
    size = torch.maximum(lo.abs(), hi.abs()) + error
    new_error = error * scale_abs + gamma(1) * (size * scale_abs + layer.shift.abs()) + UNDERFLOW * (scale_abs + 3)
    center = (lo + hi) / 2 * layer.scale + layer.shift
    radius = (hi - lo) / 2 * scale_abs
    return center - radius, center + radius, new_error


def _relu(layer, value):
    lo, hi, error = value
    return lo.clamp(min=0), hi.clamp(min=0), error


def _move(layer, value):
    # Flatten, Reshape, Transpose, Pad and MaxPool round nothing: max is exact and 1-Lipschitz in max-norm.
    return tuple(layer.forward(t) for t in value)


def _add(layer, a, b):
    size = torch.maximum(a[0].abs(), a[1].abs()) + a[2] + torch.maximum(b[0].abs(), b[1].abs()) + b[2]
    return a[0] + b[0], a[1] + b[1], a[2] + b[2] + gamma(1) * size + 3 * UNDERFLOW


def _concat(layer, *values):
    return tuple(torch.cat(parts, dim=layer.axis + 1) for parts in zip(*values))


RULES = {"dense": _dense, "conv2d": _conv2d, "affine": _affine, "relu": _relu, "flatten": _move,
         "reshape": _move, "transpose": _move, "pad": _move, "maxpool": _move, "add": _add, "concat": _concat}


def real_outputs(network: Network, x: np.ndarray, exact_weights: bool) -> tuple[np.ndarray, np.ndarray]:
    """For ``--arithmetic real`` (``certprune.realcheck``): the float64 outputs at the point ``x`` and this
    module's float32 error bound of the point. With ``exact_weights`` (every parameter is a constant of the
    file, bit for bit: ``onnx_io.weights_from_file``) the bound is scaled to the float64 unit roundoff: each
    of its terms is linear in a gamma at least 2^29 times float64's for sums of fewer than 2^23 terms, and
    2^-28 keeps a factor 2 spare. Otherwise the loader folded normalisation or BatchNorm into float32
    weights, which are then not the file's real network, and the float32 bound, whose spare terms cover that
    folding, is kept whole. The error is infinite where float64 may underflow (``realcheck.may_underflow``):
    no point there is confirmed."""
    point = torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(1, *network.input_shape)
    net = network.to(torch.float64)
    with torch.no_grad():
        values = [point]
        for layer, sources in zip(net.layers, net.inputs):
            values.append(layer.forward(*(values[j + 1] for j in sources)))
        if may_underflow([*values, *_parameters(net)]):
            return values[-1][0].flatten().numpy(), np.full(values[-1][0].numel(), np.inf)
        error = forward_error(network, point, point)[0].numpy() * (2.0**-28 if exact_weights else 1.0)
    return values[-1][0].flatten().numpy(), error


def _parameters(network) -> list:
    return [getattr(layer, name) for layer in network.layers for name in ("weight", "scale") if hasattr(layer, name)]
