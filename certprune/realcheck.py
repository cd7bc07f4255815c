"""Whether a counterexample also holds for the real-valued network: what ``--arithmetic real`` asks about.

A counterexample is a float32 input that onnxruntime replays. Under ``--arithmetic real`` the question is the
exact real-valued network, and at a near tie the two can disagree: onnxruntime's float32 outputs meet the
output constraints while the exact outputs miss them by 1e-7 (the soundness sweep found three such cases).
Such a point is not a counterexample of the real network, so it is not reported as one.

The check is rigorous without exact arithmetic: the network runs in float64 on the float32 input, and the
distance to the exact outputs is bounded by Higham's gamma with the float64 unit roundoff (every sum of ``k``
terms plus a bias is within ``gamma(k + 1) * (sum |w x| + |b|)``, errors of earlier layers pass through
``|W|``, ReLU keeps them). The point counts only if every row of a conjunction holds with that error
against it: ``A y64 + |A| err <= b``. A true violation by less than about 1e-12 of the outputs' scale is
therefore not confirmed (the search goes on, or ends unknown), never the other way round.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

UNIT = 2.0**-53  # float64, round to nearest
SPARE = 2.0  # for the roundings of the bound's own float64 arithmetic


def gamma(terms: int) -> float:
    k = (terms + 1) * UNIT
    return SPARE * k / (1.0 - k)


def holds_for_real(y: np.ndarray, error: np.ndarray, constraints: Sequence[tuple]) -> bool:
    """Whether some conjunction ``A y <= b`` of ``constraints`` holds for every output within ``error`` of
    ``y`` (float64 outputs of the real-valued network and a bound on their distance to the exact ones)."""
    y, error = np.ravel(y).astype(np.float64), np.ravel(error).astype(np.float64)
    for A, b in constraints:
        A, b = np.atleast_2d(np.asarray(A, dtype=np.float64)), np.ravel(np.asarray(b, dtype=np.float64))
        reach = np.abs(A) @ error + gamma(A.shape[1]) * (np.abs(A) @ np.abs(y) + np.abs(b))
        if np.all(A @ y + reach <= b):
            return True
    return False


def chain_outputs(weights: Sequence, biases: Sequence[np.ndarray], x: np.ndarray, apply) -> tuple[np.ndarray, np.ndarray]:
    """float64 outputs of a dense/convolutional ReLU chain (``certprune.fastpath.Chain``'s layers, the file's
    own float32 constants) at the flat input ``x``, and a bound on their distance to the exact real-valued
    outputs (infinite where float64 may underflow: ``_may_underflow``)."""
    h = np.ravel(x).astype(np.float64)[None]
    error = np.zeros_like(h)
    unsafe = np.full(len(biases[-1]), np.inf)
    if _may_underflow([w.weight if hasattr(w, "weight") else w for w in weights]):
        return unsafe, unsafe
    for k, (w, b) in enumerate(zip(weights, biases)):
        if _may_underflow([h]):
            return unsafe, unsafe
        w64, b64 = w.astype(np.float64), np.asarray(b, dtype=np.float64)
        w_abs = w64.abs() if hasattr(w64, "weight") else np.abs(w64)
        terms = int(np.prod(w.weight.shape[1:])) if hasattr(w, "weight") else w.shape[1]
        y = apply(w64, h) + b64
        error = apply(w_abs, error) + gamma(terms) * (apply(w_abs, np.abs(h)) + np.abs(b64))
        h = np.maximum(y, 0) if k < len(weights) - 1 else y
    return h[0], error[0]


def network_outputs(network, x: np.ndarray, exact_weights: bool) -> tuple[np.ndarray, np.ndarray]:
    """The same for any ``certprune.network.Network``: float64 outputs and ``bounds.rounding``'s float32 error
    bound of the point. With ``exact_weights`` (every parameter is a constant of the file, bit for bit; see
    ``weights_from_file``) that bound is scaled to the float64 unit roundoff: each of its terms is linear in a
    gamma at least 2^29 times float64's for sums of fewer than 2^23 terms, and 2^-28 keeps a factor 2 spare.
    Otherwise the loader folded normalisation or BatchNorm into float32 weights, which are then not the file's
    real network: the float32 bound, whose spare terms cover that folding, is kept whole.

    The error is infinite where float64 may underflow (``_may_underflow``): no point there is confirmed."""
    import torch

    from certprune.bounds.rounding import forward_error

    point = torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(1, *network.input_shape)
    net = network.to(torch.float64)
    with torch.no_grad():
        values = [point]
        for layer, sources in zip(net.layers, net.inputs):
            values.append(layer.forward(*(values[j + 1] for j in sources)))
        if _may_underflow([*values, *_parameters(net)]):
            return values[-1][0].flatten().numpy(), np.full(values[-1][0].numel(), np.inf)
        error = forward_error(network, point, point)[0].numpy() * (2.0**-28 if exact_weights else 1.0)
    return values[-1][0].flatten().numpy(), error


TINY = 2.0**-500  # below this, a product of two such numbers may leave float64's normal range (2^-1022)


def _may_underflow(arrays) -> bool:
    """Whether some nonzero weight or value is below ``TINY`` in magnitude: only then can a product underflow,
    where Higham's relative bound fails (a sum of normal numbers that lands below the normal range is exact)."""
    return any(bool(((abs(a) > 0) & (abs(a) < TINY)).any()) for a in arrays)


def _parameters(network) -> list:
    return [getattr(layer, name) for layer in network.layers for name in ("weight", "scale") if hasattr(layer, name)]


def weights_from_file(onnx_path, network) -> bool:
    """Whether every weight, bias, scale and shift of the loaded ``network`` is a float32 constant of the ONNX
    file bit for bit (a matrix possibly transposed): then the network is the file's real-valued network."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    arrays += [numpy_helper.to_array(a.t) for node in model.graph.node if node.op_type == "Constant"
               for a in node.attribute if a.name == "value"]
    known = set()
    for array in arrays:
        if array.dtype == np.float32:
            known.add(np.ascontiguousarray(array).tobytes())
            if array.ndim == 2:
                known.add(np.ascontiguousarray(array.T).tobytes())
    for layer in network.layers:
        for name in ("weight", "bias", "scale", "shift"):
            if hasattr(layer, name):
                value = getattr(layer, name).detach().to(dtype=torch.float32).numpy()
                if np.ascontiguousarray(value).tobytes() not in known:
                    return False
    return True
