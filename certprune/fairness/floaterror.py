"""A sound a-posteriori bound on how far the float32 network can stray from the exact one, on a given box.

The model that must be trusted runs in float32 (onnxruntime); bounds, MILP and Z3 reason about the exact
real-valued network. The gap, per box, is bounded in three steps:

1. **Local rounding.** A float32 Gemm row ``fl(sum_j w_j x_j + b)`` of ``k`` nonzero terms plus the bias,
   summed in ANY order, fused multiply-adds or not, is within ``gamma(k + 1) * (sum_j |w_j| |x_j| + |b|)``
   of the exact value (Higham, Accuracy and Stability of Numerical Algorithms, 3.1: every term meets at
   most ``k + 1`` roundings on its way to the result; a zero weight adds an exact zero), with
   ``gamma(m) = m u / (1 - m u)``, ``u = 2^-24``, plus ``(k + 1) * 2^-126`` for underflow (flushed or
   gradual). ``|x_j|`` is taken on THIS box: the magnitude of the layer's float32 input, i.e. the larger
   end of the exact bounds of that input over the box (IBP, or the tighter CROWN bounds when given) plus the
   error already accumulated there. An elementwise Mul-then-Add (Affine) rounds twice: ``gamma(2)``.
2. **Accumulation.** ``eps_k = |W_k| eps_{k-1} + delta_k`` bounds |float - exact| of every neuron (used for
   magnitudes and for which ReLUs the float32 run can switch: a neuron whose exact upper bound plus
   ``eps`` is <= 0 outputs an exact 0 in both, and passes no error on).
3. **To the outputs.** ``float(Y) - Y`` telescopes into ``sum_k J_k delta_k`` where ``J_k`` is the secant
   Jacobian of the exact layers after ``k`` between two points within ``eps`` of the exact activations; it
   lies in the interval product ``W_L D_{L-1} W_{L-1} ... `` with ``D`` in {0}, {1} or [0, 1] per ReLU (from
   the bounds widened by ``eps``). The bound of row ``g`` of ``G @ Y`` is ``sum_k |g J_k| delta_k``, which
   keeps the cancellations between layers that ``|W_L| ... |W_1|`` throws away.

Inputs: twin inputs that are integers below 2^24 are exact in float32; any other input is rounded to
nearest once (``u |x|``).

All of this holds only when the network's arithmetic IS the ONNX graph's: the same float32 weights, one
Gemm per Dense. ``graph_matches`` checks that bit for bit. Otherwise (normalisation or BatchNorm folded into
the weights by the reader) ``Rounding(exact_graph=False)`` keeps the a-priori safety of
``certprune.bounds.rounding``: ``SPARE`` extra terms per sum and a factor ``SAFETY``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from certprune.errors import UnsupportedLayerError
from certprune.network import Affine, Dense, Flatten, Network, ReLU

UNIT_ROUNDOFF = 2.0**-24  # float32, round to nearest
TINY = 2.0**-126  # the smallest normal float32: bounds the error of one underflowing operation
EXACT_INTEGERS = 2.0**24  # integers up to this size are float32 values
SPARE, SAFETY = 8, 2.0  # the a-priori allowance for graphs the network does not mirror


@dataclass(frozen=True, kw_only=True)
class Rounding:
    """How many roundings a sum of ``terms`` terms can meet: exact_graph says the network is the graph."""

    exact_graph: bool = True

    def gamma(self, terms: torch.Tensor) -> torch.Tensor:
        if self.exact_graph:
            k = terms * UNIT_ROUNDOFF
            return k / (1.0 - k)
        k = (terms + SPARE) * UNIT_ROUNDOFF
        return SAFETY * k / (1.0 - k)


@dataclass
class _Step:
    """One layer of the forward sweep: what the backward sweep needs."""

    layer: object
    delta: torch.Tensor | None = None  # (B, n) local rounding bound of this layer's outputs
    slope: tuple[torch.Tensor, torch.Tensor] | None = None  # ReLU secant slopes (B, n) lower, upper


def float32_error(network: Network, lower: torch.Tensor, upper: torch.Tensor, *,
                  pre_bounds: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                  rows: torch.Tensor | None = None, integer: torch.Tensor | None = None,
                  rounding: Rounding = Rounding()) -> torch.Tensor:
    """(B, R) bound on |rows @ (float32 outputs - exact outputs)| for every input of each box (B, n_in).

    ``pre_bounds``: sound exact bounds (lower, upper), (B, n), of each ReLU's input on the same boxes (e.g.
    CROWN's); intersected with interval bounds. ``rows`` (R, n_out), default the identity (per output).
    ``integer`` (n_in,) marks inputs that take only integer values (exact in float32 below 2^24).
    """
    lo, hi = lower.double().flatten(1), upper.double().flatten(1)
    eps = _input_error(lo, hi, integer)
    steps = [_Step(None, delta=eps)]
    given = list(pre_bounds or [])
    relu_index = 0
    for index, layer in enumerate(network.layers):
        if isinstance(layer, Dense):
            lo, hi, eps, delta = _dense(layer, lo, hi, eps, rounding)
            steps.append(_Step(layer, delta=delta))
        elif isinstance(layer, Affine):
            lo, hi, eps, delta = _affine(layer, lo, hi, eps, rounding)
            steps.append(_Step(layer, delta=delta))
        elif isinstance(layer, ReLU):
            if relu_index < len(given):
                a, b = (t.double().flatten(1) for t in given[relu_index])
                lo, hi = torch.maximum(lo, a), torch.minimum(hi, b)
            relu_index += 1
            slope_lo = (lo - eps >= 0).double()
            slope_hi = (hi + eps > 0).double()
            eps = eps * slope_hi  # a neuron off in both runs carries no error
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
            steps.append(_Step(layer, slope=(slope_lo, slope_hi)))
        elif isinstance(layer, Flatten):
            continue
        else:
            raise UnsupportedLayerError(f"float32_error has no rule for layer kind '{layer.kind}' (layer {index})")
    return _backward(steps, rows, lo.shape)


def _input_error(lo: torch.Tensor, hi: torch.Tensor, integer: torch.Tensor | None) -> torch.Tensor:
    """Integer inputs below 2^24 (and fixed float32 values) are exact; others round to nearest once."""
    size = torch.maximum(lo.abs(), hi.abs())
    exact = (lo == hi) & (lo == lo.float().double())
    if integer is not None:
        exact = exact | (torch.as_tensor(integer, dtype=torch.bool) & (size <= EXACT_INTEGERS))
    return torch.where(exact, torch.zeros_like(size), UNIT_ROUNDOFF * size)


def _dense(layer: Dense, lo, hi, eps, rounding: Rounding):
    W = layer.weight.double()
    b = layer.bias.double()
    w_abs = W.abs()
    size = torch.maximum(lo.abs(), hi.abs()) + eps  # |float32 input| on the box
    terms = (W != 0).sum(dim=1).double() + 1.0
    delta = rounding.gamma(terms) * (size @ w_abs.T + b.abs()) + terms * TINY
    eps = eps @ w_abs.T + delta
    center = ((lo + hi) / 2) @ W.T + b
    radius = ((hi - lo) / 2) @ w_abs.T
    return center - radius, center + radius, eps, delta


def _affine(layer: Affine, lo, hi, eps, rounding: Rounding):
    s, t = layer.scale.double().flatten(), layer.shift.double().flatten()
    size = torch.maximum(lo.abs(), hi.abs()) + eps
    delta = rounding.gamma(torch.tensor(2.0, dtype=torch.float64)) * (size * s.abs() + t.abs()) + 2 * TINY
    eps = eps * s.abs() + delta
    center = (lo + hi) / 2 * s + t
    radius = (hi - lo) / 2 * s.abs()
    return center - radius, center + radius, eps, delta


def _backward(steps: list[_Step], rows: torch.Tensor | None, shape) -> torch.Tensor:
    """sum_k |rows J_k| delta_k, with the interval Jacobians J_k built from the output backwards."""
    batch, n_out = shape
    G = torch.eye(n_out, dtype=torch.float64) if rows is None else torch.as_tensor(rows, dtype=torch.float64)
    lam_lo = G.expand(batch, *G.shape).clone()  # (B, R, n) interval [lam_lo, lam_hi] of rows @ J
    lam_hi = lam_lo.clone()
    total = torch.zeros(batch, G.shape[0], dtype=torch.float64)
    for step in reversed(steps):
        if step.delta is not None:
            reach = torch.maximum(lam_lo.abs(), lam_hi.abs())
            total = total + torch.einsum("brn,bn->br", reach, step.delta)
        if isinstance(step.layer, Dense):
            W = step.layer.weight.double()
            center, radius = (lam_lo + lam_hi) / 2 @ W, (lam_hi - lam_lo) / 2 @ W.abs()
            lam_lo, lam_hi = center - radius, center + radius
        elif isinstance(step.layer, Affine):
            s = step.layer.scale.double().flatten()
            lam_lo, lam_hi = torch.minimum(lam_lo * s, lam_hi * s), torch.maximum(lam_lo * s, lam_hi * s)
        elif isinstance(step.layer, ReLU):
            d_lo, d_hi = (d[:, None, :] for d in step.slope)  # slopes in [d_lo, d_hi], both >= 0
            lam_lo = torch.minimum(lam_lo * d_lo, lam_lo * d_hi)
            lam_hi = torch.maximum(lam_hi * d_lo, lam_hi * d_hi)
    return total


def graph_matches(onnx_path: str, network: Network) -> bool:
    """Whether the ONNX graph computes exactly the network's arithmetic: a chain of Gemm (alpha = beta = 1)
    whose float32 weights and biases equal the Dense layers' bit for bit, with Relu, Flatten, Identity and a
    final Sigmoid or Softmax between or after them and nothing else."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    gemms = []
    for node in model.graph.node:
        if node.op_type in ("Relu", "Flatten", "Identity", "Sigmoid", "Softmax"):
            continue
        if node.op_type != "Gemm" or len(node.input) != 3 or any(i not in constants for i in node.input[1:]):
            return False
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
            return False
        weight = constants[node.input[1]]
        gemms.append((weight.T if not attrs.get("transB", 0) else weight, constants[node.input[2]]))
    dense = [layer for layer in network.layers if isinstance(layer, Dense)]
    if len(dense) != len(gemms) or any(not isinstance(layer, (Dense, ReLU, Flatten)) for layer in network.layers):
        return False
    for layer, (weight, bias) in zip(dense, gemms):
        ours_w = layer.weight.detach().to(torch.float32).numpy()
        ours_b = layer.bias.detach().to(torch.float32).numpy()
        if weight.dtype != np.float32 or bias.dtype != np.float32 or weight.shape != ours_w.shape:
            return False
        if bias.size != ours_b.size or not (np.array_equal(weight, ours_w) and
                                            np.array_equal(bias.reshape(-1), ours_b)):
            return False
    return True
