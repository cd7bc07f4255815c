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

    def gamma(self, terms: np.ndarray) -> np.ndarray:
        if self.exact_graph:
            k = terms * UNIT_ROUNDOFF
            return k / (1.0 - k)
        k = (terms + SPARE) * UNIT_ROUNDOFF
        return SAFETY * k / (1.0 - k)


@dataclass
class _Step:
    """One layer of the forward sweep: what the backward sweep needs."""

    weight: np.ndarray | None = None  # Dense (n, m) or Affine scale (n,)
    delta: np.ndarray | None = None  # (B, n) local rounding bound of this layer's outputs
    slope: tuple[np.ndarray, np.ndarray] | None = None  # ReLU secant slopes (B, n) lower, upper


def float32_error(network: Network, lower: torch.Tensor, upper: torch.Tensor, *,
                  pre_bounds: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                  rows: torch.Tensor | None = None, integer: torch.Tensor | None = None,
                  rounding: Rounding = Rounding()) -> torch.Tensor:
    """(B, R) bound on |rows @ (float32 outputs - exact outputs)| for every input of each box (B, n_in).

    ``pre_bounds``: sound exact bounds (lower, upper), (B, n), of each ReLU's input on the same boxes (e.g.
    CROWN's); intersected with interval bounds. ``rows`` (R, n_out), default the identity (per output).
    ``integer`` (n_in,) marks inputs that take only integer values (exact in float32 below 2^24).
    Computed in numpy float64 (torch's threaded small products stall on a busy machine).
    """
    lo, hi = (_array(t).reshape(len(t), -1) for t in (lower, upper))
    eps = _input_error(lo, hi, None if integer is None else _array(integer).astype(bool))
    steps = [_Step(delta=eps)]
    given = list(pre_bounds or [])
    relu_index = 0
    for index, layer in enumerate(network.layers):
        if isinstance(layer, Dense):
            W = _array(layer.weight)
            lo, hi, eps, delta = _dense(W, _array(layer.bias), lo, hi, eps, rounding)
            steps.append(_Step(weight=W, delta=delta))
        elif isinstance(layer, Affine):
            scale = _array(layer.scale).reshape(-1)
            lo, hi, eps, delta = _affine(scale, _array(layer.shift).reshape(-1), lo, hi, eps, rounding)
            steps.append(_Step(weight=scale, delta=delta))
        elif isinstance(layer, ReLU):
            if relu_index < len(given):
                a, b = (_array(t).reshape(len(lo), -1) for t in given[relu_index])
                lo, hi = np.maximum(lo, a), np.minimum(hi, b)
            relu_index += 1
            slope = ((lo - eps >= 0).astype(np.float64), (hi + eps > 0).astype(np.float64))
            eps = eps * slope[1]  # a neuron off in both runs carries no error
            lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
            steps.append(_Step(slope=slope))
        elif isinstance(layer, Flatten):
            continue
        else:
            raise UnsupportedLayerError(f"float32_error has no rule for layer kind '{layer.kind}' (layer {index})")
    G = np.eye(lo.shape[1]) if rows is None else _array(rows).reshape(-1, lo.shape[1])
    return torch.from_numpy(_backward(steps, G, len(lo)))


def _array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _input_error(lo: np.ndarray, hi: np.ndarray, integer: np.ndarray | None) -> np.ndarray:
    """Integer inputs below 2^24 (and fixed float32 values) are exact; others round to nearest once."""
    size = np.maximum(np.abs(lo), np.abs(hi))
    exact = (lo == hi) & (lo == lo.astype(np.float32).astype(np.float64))
    if integer is not None:
        exact = exact | (integer & (size <= EXACT_INTEGERS))
    return np.where(exact, 0.0, UNIT_ROUNDOFF * size)


def _dense(W: np.ndarray, b: np.ndarray, lo, hi, eps, rounding: Rounding):
    w_abs = np.abs(W)
    size = np.maximum(np.abs(lo), np.abs(hi)) + eps  # |float32 input| on the box
    terms = (W != 0).sum(axis=1) + 1.0
    delta = rounding.gamma(terms) * (size @ w_abs.T + np.abs(b)) + terms * TINY
    eps = eps @ w_abs.T + delta
    center = ((lo + hi) / 2) @ W.T + b
    radius = ((hi - lo) / 2) @ w_abs.T
    return center - radius, center + radius, eps, delta


def _affine(s: np.ndarray, t: np.ndarray, lo, hi, eps, rounding: Rounding):
    size = np.maximum(np.abs(lo), np.abs(hi)) + eps
    delta = rounding.gamma(np.float64(2.0)) * (size * np.abs(s) + np.abs(t)) + 2 * TINY
    eps = eps * np.abs(s) + delta
    center = (lo + hi) / 2 * s + t
    radius = (hi - lo) / 2 * np.abs(s)
    return center - radius, center + radius, eps, delta


def _backward(steps: list[_Step], G: np.ndarray, batch: int) -> np.ndarray:
    """sum_k |G J_k| delta_k, with the interval Jacobians J_k built from the output backwards."""
    lam_lo = np.broadcast_to(G, (batch, *G.shape)).copy()  # (B, R, n) interval [lam_lo, lam_hi] of G @ J
    lam_hi = lam_lo.copy()
    total = np.zeros((batch, G.shape[0]))
    for step in reversed(steps):
        if step.delta is not None:
            reach = np.maximum(np.abs(lam_lo), np.abs(lam_hi))
            total += np.einsum("brn,bn->br", reach, step.delta)
        if step.weight is not None and step.weight.ndim == 2:  # Dense
            W = step.weight
            center, radius = (lam_lo + lam_hi) / 2 @ W, (lam_hi - lam_lo) / 2 @ np.abs(W)
            lam_lo, lam_hi = center - radius, center + radius
        elif step.weight is not None:  # Affine
            s = step.weight
            lam_lo, lam_hi = np.minimum(lam_lo * s, lam_hi * s), np.maximum(lam_lo * s, lam_hi * s)
        elif step.slope is not None:  # ReLU: slopes in [d_lo, d_hi], both >= 0
            d_lo, d_hi = (d[:, None, :] for d in step.slope)
            lam_lo = np.minimum(lam_lo * d_lo, lam_lo * d_hi)
            lam_hi = np.maximum(lam_hi * d_lo, lam_hi * d_hi)
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
