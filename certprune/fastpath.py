"""A numpy-only first try at a VNN-LIB instance on a small ReLU chain, so easy ones never load torch.

Importing torch takes longer than deciding an easy ACAS Xu instance. For a model that is a plain chain
(Flatten, MatMul + Add, Gemm or Conv, Relu, Dropout; read from the protobuf wire format, without the ``onnx``
package) this module tries, within a short budget: a gradient attack whose candidates count only after
onnxruntime replays them on the original file, then input splitting with CROWN bounds. The bounds carry the
rounding margins of ``certprune.bounds`` (every bound widened by ``REL * (|value| + sum of |terms|)``, the
terms of the float32 forward pass included, with the same recurrences as ``bounds/ibp.py``, ``linear.py`` and
``crown.py``); they are evaluated in float64 on the float32 weights, whose own rounding is far below the
margin. Convolutions are linear maps of flat vectors (``fastconv``); boxes CROWN leaves open deep in the
search get alpha-CROWN's optimised slopes (``fastalpha``). Any other model, or an instance not decided in the
budget, goes to the full engine.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from certprune.deadline import Deadline
from certprune.fastalpha import optimised_lower
from certprune.fastconv import Conv, apply, back, linear_map
from certprune.floats import float32_box
from certprune.realcheck import chain_outputs, holds_for_real
from certprune.runtime import OnnxRuntimeModel
from certprune.spec.vnnlib import Disjunct, VnnlibProperty, check_matches
from certprune.types import Certificate, Counterexample, Result, Verdict

REL = 2.0**-15  # certprune.bounds.base.REL[torch.float32] (a test checks that they agree)
# With ``arithmetic="real"`` a proof is about the exact real-valued network (what VNN-COMP's tools verify), so
# the margin only has to cover this module's own float64 evaluation: a dot product of n terms errs by at most
# n * 2^-53 * sum|terms|, 2^-41 for n = 4096, and a few layers of back-substitution compound that to far
# below 2^-30 (2^23 float64 ulps).
REL_REAL = 2.0**-30
ARITHMETIC = {"float32": REL, "real": REL_REAL}
# Below the normal range a product is rounded absolutely, by up to 2^-150 in the float32 model (IEEE gradual
# underflow) and 2^-1075 in this module's float64: as certprune.bounds.base.TINY, each term's magnitude counts
# the smallest subnormal more (divided by the margin), and each sum 2n + 1 times it.
UNDERFLOW = {REL: 2.0**-149, REL_REAL: 2.0**-1074}
MAX_NEURONS = 4096  # hidden units summed over layers; larger chains go straight to the full engine
MAX_CONV_NEURONS = 32768  # the same with convolutions (fewer multiply-adds per unit)
BUDGET = 2.0  # seconds of search before handing over to the full engine
ELEMENTS = 1 << 22  # coefficients carried back at once (32 MB in float64): larger sets go in chunks
BATCH = 256  # boxes bounded together (64 ran 1.3x slower per box on ACAS Xu prop_1, 512 no faster)
COEFFICIENT_FLOOR, LOOKAHEAD_DIMS = 1e-3, 3  # as in bab.branching
ATTACK_SHARE = 0.25  # of the budget at most for the attack: a large network still gets its whole-box bound
INPUT_SPLIT_DIMS = 16  # more free inputs than this: only the whole box is bounded (as bab.search decides)
ALPHA_DEPTH = 10  # halvings after which a box CROWN leaves open gets alpha-CROWN's slopes
ALPHA_STEPS = 20  # of its Adam (0: never)
PARITY = 1e-4  # relative to the output scale: onnxruntime and the chain may sum in other orders, no more
CORNER_ROWS = 3  # per open box, the rows farthest from a proof whose bound's minimising corner is checked


class NotAChain(Exception):
    """The model is not a chain this module reads; the full engine takes it."""


class _OutOfTime(Exception):
    """The deadline passed inside a bound computation."""


# ---- ONNX from the protobuf wire format: ModelProto.graph (7), GraphProto.node (1), initializer (5), input (11),
# output (12); NodeProto input (1), output (2), op_type (4), attribute (5); TensorProto dims (1), data_type (2),
# float_data (4), int64_data (7), name (8), raw_data (9), data_location (14).

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value - (1 << 64) if value >= 1 << 63 else value), i
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a message: an int for varints, the bytes otherwise."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        else:
            raise NotAChain(f"protobuf wire type {wire}")
        yield number, wire, value


def _ints(wire: int, value) -> list[int]:
    if wire == 0:
        return [value]
    out, i = [], 0
    while i < len(value):
        v, i = _varint(value, i)
        out.append(v)
    return out


def _tensor(buf: bytes) -> tuple[str, np.ndarray]:
    dims, dtype, name, raw, parts = [], 1, "", None, []
    for number, wire, value in _fields(buf):
        if number == 1:
            dims += _ints(wire, value)
        elif number == 2:
            dtype = value
        elif number in (4, 5, 7):  # float_data, int32_data (also bools), int64_data
            parts += [value] if number == 4 else _ints(wire, value)
        elif number == 8:
            name = value.decode()
        elif number == 9:
            raw = value
        elif number == 14 and value == 1:
            raise NotAChain(f"tensor {name} is stored outside the file")
    if dtype == 1:
        data = raw if raw is not None else b"".join(parts)
        return name, np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(dims)
    if dtype == 7:
        array = np.frombuffer(raw, dtype="<i8") if raw is not None else np.array(parts, dtype=np.int64)
        return name, array.astype(np.int64).reshape(dims)
    if dtype == 9:
        values = np.frombuffer(raw, dtype=np.uint8) if raw is not None else np.array(parts)
        return name, values.astype(bool).reshape(dims)
    raise NotAChain(f"tensor {name} of ONNX data type {dtype}")


def _node(buf: bytes) -> tuple[str, list[str], list[str], dict]:
    op, inputs, outputs, attributes = "", [], [], {}
    for number, _, value in _fields(buf):
        if number == 1:
            inputs.append(value.decode())
        elif number == 2:
            outputs.append(value.decode())
        elif number == 4:
            op = value.decode()
        elif number == 5:
            attributes.update([_attribute(value)])
        elif number == 7 and value not in (b"", b"ai.onnx"):
            raise NotAChain(f"operator of domain {value.decode()}")
    return op, inputs, outputs, attributes


def _attribute(buf: bytes) -> tuple[str, object]:
    name, value = "", None
    for number, wire, field in _fields(buf):
        if number == 1:
            name = field.decode()
        elif number == 2:
            value = struct.unpack("<f", field)[0]
        elif number == 3:
            value = field
        elif number == 5:
            value = _tensor(field)[1]
        elif number == 8:  # ints: packed, or one field per value
            value = (value if isinstance(value, list) else []) + _ints(wire, field)
        elif number in (4, 7):
            value = ("other", field)  # a string or floats: no attribute of a supported node needs them
    return name, value


def _value_info(buf: bytes) -> tuple[str, list]:
    """Name and shape (ints, or None for a symbolic dimension) of a graph input or output."""
    name, dims = "", []
    for number, _, value in _fields(buf):
        if number == 1:
            name = value.decode()
        elif number == 2:
            for n1, _, tensor_type in _fields(value):
                for n2, _, part in _fields(tensor_type) if n1 == 1 else ():
                    if n2 == 1 and part != 1:
                        raise NotAChain(f"input or output {name} is not float32")
                    for n3, _, dim in _fields(part) if n2 == 2 else ():
                        fields = {k: v for k, _, v in _fields(dim)} if n3 == 1 else {}
                        if n3 == 1:
                            dims.append(fields.get(1) if 1 in fields else None)
    return name, dims


@dataclass(frozen=True, eq=False)
class Chain:
    """y = W_L relu(... relu(W_1 x + b_1) ...) + b_L; ``weights[k]`` is a float32 (out, in) matrix or a
    ``fastconv.Conv`` (a convolution too large to unroll), on flat vectors."""

    weights: tuple
    biases: tuple[np.ndarray, ...]
    input_shape: tuple[int, ...]  # one sample's, as the graph declares it

    @property
    def macs(self) -> int:
        """Multiply-adds of one forward pass."""
        return sum(w.size if isinstance(w, np.ndarray) else w.macs for w in self.weights)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """float32 logits (P, n_out) of flat inputs (P, n) and each hidden layer's active mask."""
        masks = []
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = apply(w, x) + b
            if k < len(self.weights) - 1:
                masks.append(x > 0)
                x = np.maximum(x, 0)
        return x, masks


def read_chain(path: str | Path) -> Chain:
    """The model as a Chain, or NotAChain naming what this reader does not take."""
    graph = {}
    for number, _, value in _fields(Path(path).read_bytes()):
        if number == 7:
            graph = {}
            for n, _, v in _fields(value):
                graph.setdefault(n, []).append(v)
    constants = dict(_tensor(t) for t in graph.get(5, []))
    inputs = [_value_info(v) for v in graph.get(11, [])]
    inputs = [(name, dims) for name, dims in inputs if name not in constants]
    outputs = [_value_info(v)[0] for v in graph.get(12, [])]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NotAChain("not one input and one output")
    name, dims = inputs[0]
    if len(dims) == 1 and dims[0] is not None:  # one vector without a batch dimension (as VNN-COMP's test nets)
        return _build(graph.get(1, []), constants, name, outputs[0], tuple(dims), unbatched=True)
    if len(dims) < 2 or dims[0] not in (1, None) or any(d is None for d in dims[1:]):
        raise NotAChain(f"input shape {dims}")
    return _build(graph.get(1, []), constants, name, outputs[0], tuple(dims[1:]))


def _build(nodes: Sequence[bytes], constants: dict, current: str, output: str, input_shape,
           unbatched: bool = False) -> Chain:
    """Walk the nodes along the activation: layers alternate dense and ReLU, dense first; a final ReLU is
    followed by an identity layer. ``unbatched``: the activation is one vector, so ``MatMul(W, x)`` is W x."""
    layers, size = [], int(np.prod(input_shape))  # ("dense", W, b, bias_added) or ("relu",)
    shape = tuple(input_shape) if unbatched else (1, *input_shape)  # of the activation, until the first dense layer
    image = tuple(input_shape)  # of the activation (one sample), as a convolution sees it
    convolutions = 0
    for buf in nodes:
        op, ins, outs, attributes = _node(buf)
        if op == "Constant" and isinstance(attributes.get("value"), np.ndarray):
            constants[outs[0]] = attributes["value"]
            continue
        others = [constants.get(i) for i in ins if i != current]
        if op == "Dropout" and outs:  # inference: the identity (a second output, the mask, must not be read)
            if len(others) > 1 and (others[1] is None or bool(np.any(others[1]))):
                raise NotAChain("Dropout in training mode")
            outs, others = outs[:1], []
        if ins.count(current) != 1 or len(outs) != 1 or any(o is None for o in others):
            raise NotAChain(f"{op} node outside a chain")
        last = layers[-1][0] if layers else None
        if unbatched and op in ("Flatten", "Reshape", "Conv", "Gemm"):  # Gemm and Conv take batched inputs only
            raise NotAChain(f"{op} node on an input without a batch dimension")
        if op in ("Flatten", "Reshape", "Identity", "Dropout") and (not layers or op != "Reshape") \
                and attributes.get("axis", 1) == 1:
            if op == "Reshape" and [d for d in others[0].tolist() if d != 1] not in ([-1], [size]):
                raise NotAChain("Reshape to a non-vector")
            if op in ("Flatten", "Reshape"):  # flat vectors are channel-major already: nothing to do but the shape
                shape, image = (1, int(np.prod(image))), (int(np.prod(image)),)
        elif op == "Conv" and ins[0] == current and last in (None, "relu") and len(image) == 3:
            conv, convolutions = _conv(attributes, others, image), convolutions + 1
            image = conv.out_shape
            bias = others[1].reshape(-1) if len(others) > 1 else np.zeros(image[0], np.float32)
            layers.append(("dense", linear_map(conv), np.repeat(bias.astype(np.float32), image[1] * image[2]), True))
            shape = (1, int(np.prod(image)))
        elif op in ("Sub", "Add") and not layers and ins[0] == current and not others[0].any() \
                and np.broadcast_shapes(shape, others[0].shape) == shape:
            pass  # x - 0 or x + 0 (not broadcast to a larger shape): the identity, as ACAS Xu's normalisation
        elif op == "MatMul" and ins[0] == current and others[0].ndim == 2 and last in (None, "relu") \
                and (not layers or len(image) == 1):
            layers.append(("dense", others[0].T, np.zeros(others[0].shape[1], np.float32), False))
            image = (others[0].shape[1],)
        elif op == "MatMul" and unbatched and ins[1] == current and others[0].ndim == 2 and last in (None, "relu"):
            layers.append(("dense", others[0], np.zeros(others[0].shape[0], np.float32), False))  # W x
            image = (others[0].shape[0],)
        elif op == "Add" and last == "dense" and not layers[-1][3] and others[0].size == len(layers[-1][2]) \
                and others[0].shape[-1:] == (others[0].size,):
            layers[-1] = ("dense", layers[-1][1], others[0].reshape(-1).astype(np.float32), True)
        elif op == "Gemm" and ins[0] == current and last in (None, "relu") and _plain_gemm(attributes) \
                and (not layers or len(image) == 1):
            w = others[0] if attributes.get("transB", 0) else others[0].T
            c = others[1].reshape(-1) if len(others) > 1 else np.zeros(len(w), np.float32)
            if c.size != len(w):
                raise NotAChain("Gemm bias of another size")
            layers.append(("dense", w, c.astype(np.float32), True))
            image = (len(w),)
        elif op == "Relu" and last == "dense":
            layers.append(("relu",))
        else:
            raise NotAChain(f"{op} node")
        current = outs[0]
    if layers and layers[-1][0] == "relu":  # the graph's output is a ReLU: y = I relu(...) + 0, exactly
        width = len(layers[-2][2])
        layers.append(("dense", np.eye(width, dtype=np.float32), np.zeros(width, np.float32), True))
    if current != output or not layers or layers[-1][0] != "dense":
        raise NotAChain("the chain does not end in a dense layer at the graph output")
    dense = [layer for layer in layers if layer[0] == "dense"]
    if len(dense) != len(layers) - len(dense) + 1 or dense[0][1].shape[1] != size:
        raise NotAChain("dense layers not separated by ReLUs, or of the wrong input size")
    limit = MAX_CONV_NEURONS if convolutions else MAX_NEURONS
    if sum(w.shape[0] for _, w, _, _ in dense[:-1]) > limit:
        raise NotAChain(f"more than {limit} hidden units")
    weights = tuple(np.ascontiguousarray(w, dtype=np.float32) if isinstance(w, np.ndarray) else w
                    for _, w, _, _ in dense)
    if any(a.shape[0] != b.shape[1] for a, b in zip(weights, weights[1:])):
        raise NotAChain("layer sizes do not match")
    return Chain(weights, tuple(b for _, _, b, _ in dense), tuple(input_shape))


def _conv(attributes: dict, others: list, image: tuple) -> Conv:
    """A Conv node of one group, explicit padding, on an input of shape ``image`` (C, H, W)."""
    weight = others[0]
    if weight.ndim != 4 or weight.shape[1] != image[0] or attributes.get("group", 1) != 1 \
            or attributes.get("auto_pad", ("other", b"NOTSET")) != ("other", b"NOTSET"):
        raise NotAChain("Conv node of another kind (groups, padding rule or shape)")
    pads = tuple(attributes.get("pads", [0, 0, 0, 0]))
    strides, dilations = tuple(attributes.get("strides", [1, 1])), tuple(attributes.get("dilations", [1, 1]))
    if len(pads) != 4 or len(strides) != 2 or len(dilations) != 2 or min(pads) < 0 or min(strides + dilations) < 1:
        raise NotAChain("Conv node of another kind (groups, padding rule or shape)")
    conv = Conv(weight.astype(np.float32), strides, (pads[0], pads[1], pads[2], pads[3]), dilations, tuple(image))
    if min(conv.out_shape) < 1:
        raise NotAChain("Conv node with an empty output")
    return conv


def _plain_gemm(attributes: dict) -> bool:
    return attributes.get("alpha", 1.0) == 1.0 and attributes.get("beta", 1.0) == 1.0 \
        and not attributes.get("transA", 0)


# ---- bounds: the recurrences of certprune.bounds (IBP, then CROWN with back-substituted ReLU inputs), float64

def widen_lower(value: np.ndarray, magnitude: np.ndarray, rel: float = REL) -> np.ndarray:
    return value - rel * (np.abs(value) + magnitude)


def widen_upper(value: np.ndarray, magnitude: np.ndarray, rel: float = REL) -> np.ndarray:
    return value + rel * (np.abs(value) + magnitude)


class Bounder:
    """CROWN lower bounds of ``C @ chain(x)`` over batches of input boxes, as ``bounds.CROWN`` computes them,
    widened by ``rel`` (``REL``: bounds of the float32 model; ``REL_REAL``: of the real-valued network)."""

    def __init__(self, chain: Chain, C: np.ndarray, rel: float = REL, deadline: Deadline | None = None) -> None:
        self.rel, self.deadline = rel, deadline  # past the deadline a bound stops halfway (_OutOfTime)
        self.tiny = UNDERFLOW.get(rel, 2.0**-149) / rel if rel > 0 else 0.0  # rel 0: unwidened (tests)
        self.boxes = 0  # bounded so far
        self.W = [w.astype(np.float64) for w in chain.weights]
        self.b = [b.astype(np.float64) for b in chain.biases]
        self.W_abs = [w.abs() if isinstance(w, Conv) else np.abs(w) for w in self.W]
        self.b_abs = [np.abs(b) for b in self.b]
        self.C = np.asarray(C, dtype=np.float64)
        self.relu_widths = [w.shape[0] for w in self.W[:-1]]  # (out, in) matrices and Conv alike

    def lower(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """(B, R) widened lower bounds of the rows of C over boxes (B, n)."""
        return self.lower_linear(lo, hi)[0]

    def lower_linear(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``lower`` and the (B, R, n) input coefficients of CROWN's linear bounds (``Bounds.input_coefficients``)."""
        return self.bound(lo, hi)[:2]

    def bound(self, lo: np.ndarray, hi: np.ndarray, prior: np.ndarray | None = None):
        """``lower_linear`` and the ``Layers`` it was computed from (alpha-CROWN starts from them)."""
        layers = self.layers(lo, hi, prior)
        crown, coefficients = self.rows(layers, self.C)
        coefficients = np.broadcast_to(coefficients, (len(lo), *coefficients.shape[-2:]))
        return np.maximum(crown, layers.interval), coefficients, layers

    def layers(self, lo: np.ndarray, hi: np.ndarray, prior: np.ndarray | None = None) -> "Layers":
        """Every ReLU's bounds and relaxation over boxes (B, n), and the output's interval bound of the rows.

        ``prior`` (B, 2 * ReLUs; ``Layers.flat``): bounds of every ReLU's input that hold on boxes containing
        these, e.g. the boxes they were split from. They are intersected with the intervals, so a neuron they
        show stable is not back-substituted again (on ACAS Xu most of those the intervals leave unstable)."""
        self.boxes += len(lo)
        if prior is not None:
            prior = np.split(prior, np.cumsum([w for w in self.relu_widths for _ in (0, 1)])[:-1], axis=1)
        box = (lo, hi)
        x_lo, x_hi, x_mag = lo, hi, np.zeros_like(lo)
        relaxations, pre = [], []
        for k in range(len(self.W)):
            self.check_time()
            # interval step (ibp._dense): centre +- radius, widened by the sum of |terms| of the forward pass
            centre = apply(self.W[k], (x_lo + x_hi) / 2) + self.b[k]
            radius = apply(self.W_abs[k], (x_hi - x_lo) / 2)
            mag = apply(self.W_abs[k], np.maximum(np.abs(x_lo), np.abs(x_hi)) + x_mag + self.tiny) + self.b_abs[k] \
                + (2 * x_lo.shape[1] + 1) * self.tiny
            z_lo, z_hi = widen_lower(centre - radius, mag, self.rel), widen_upper(centre + radius, mag, self.rel)
            if k == len(self.W) - 1:
                break
            if prior is not None:
                z_lo, z_hi = np.maximum(z_lo, prior[2 * k]), np.minimum(z_hi, prior[2 * k + 1])
            if k > 0:  # crown._tighten: back-substitute the neurons the intervals leave unstable
                z_lo, z_hi = self._tighten(k, box, relaxations, z_lo, z_hi, mag)
            relaxations.append(_relax(z_lo, z_hi))
            pre.append((z_lo, z_hi))
            x_lo, x_hi, x_mag = np.maximum(z_lo, 0), np.maximum(z_hi, 0), np.zeros_like(z_lo)
        # crown.output_bounds and ibp.spec_interval; the result is the larger of the two
        C_abs = np.abs(self.C)
        forward = (np.maximum(np.abs(z_lo), np.abs(z_hi)) + mag + self.tiny) @ C_abs.T \
            + (2 * self.C.shape[1] + 1) * self.tiny
        interval = widen_lower((z_lo + z_hi) / 2 @ self.C.T - (z_hi - z_lo) / 2 @ C_abs.T, forward, self.rel)
        return Layers(box, relaxations, forward, interval, pre)

    def rows(self, layers: "Layers", A: np.ndarray, lower_slopes=None, trace: list | None = None, forward=None):
        """(B, R) widened CROWN lower bounds of rows A ((R, K), or (B, R, K) per box) on the output and their
        input coefficients; ``lower_slopes`` (per ReLU layer, (B, R, width)) replace the relaxations' lower
        slopes (alpha-CROWN), ``trace`` collects the rows' coefficients arriving at each ReLU layer, last layer
        first; ``forward``: the rows' forward magnitude when they are not C's (``Layers.forward``)."""
        forward = layers.forward if forward is None else forward
        return self._rows(len(self.W) - 1, layers.box, layers.relaxations, A, forward, lower_slopes, trace)

    def _tighten(self, k, box, relaxations, lo, hi, mag):
        """crown._tighten per box: each box carries back only the neurons its own bounds leave unstable (its
        row block is padded with empty rows to the batch's largest count), both sides at once."""
        unstable = (lo < 0) & (hi > 0)
        lo, hi = lo.copy(), hi.copy()
        order = np.argsort(~unstable, axis=1, kind="stable")[:, :int(unstable.sum(axis=1).max(initial=0))]
        boxes = np.arange(len(lo))[:, None]
        # the rows' coefficients are (boxes, 2 * neurons, layer width) on the way back: in chunks of neurons
        chunk = max(1, ELEMENTS // (2 * len(lo) * max(w.shape[1] for w in self.W[:k + 1])))
        for start in range(0, order.shape[1], chunk):
            self.check_time()
            index = order[:, start:start + chunk]
            count, update = index.shape[1], unstable[boxes, index]
            rows = np.zeros((len(lo), 2 * count, lo.shape[1]))
            rows[boxes, np.arange(count), index] = update
            rows[boxes, np.arange(count) + count, index] = -update.astype(np.float64)
            bound, _ = self._rows(k, box, relaxations, rows, np.concatenate([mag[boxes, index]] * 2, axis=1))
            lo[boxes, index] = np.where(update, np.maximum(lo[boxes, index], bound[:, :count]), lo[boxes, index])
            hi[boxes, index] = np.where(update, np.minimum(hi[boxes, index], -bound[:, count:]), hi[boxes, index])
        return lo, hi

    def check_time(self) -> None:
        """Past the deadline a bound stops halfway (fastalpha checks it per step too)."""
        if self.deadline is not None and self.deadline.expired():
            raise _OutOfTime()

    def _rows(self, k, box, relaxations, A, forward, lower_slopes=None, trace=None):
        """crown.lower_rows_linear: rows A on the output of dense layer k carried back to the input and minimised;
        also the input coefficients."""
        bias = magnitude = 0.0
        for j in range(k, -1, -1):
            bias = bias + _times(A, self.b[j])
            magnitude = magnitude + _times(np.abs(A), self.b_abs[j])
            A = back(A.reshape(-1, A.shape[-1]), self.W[j]).reshape(*A.shape[:-1], -1)  # one matrix product
            if j > 0:  # crown._relu: lower line where the coefficient is positive, upper line where negative
                lower_slope, upper_slope, upper_bias = relaxations[j - 1]
                lower_slope = lower_slope[:, None, :] if lower_slopes is None else lower_slopes[j - 1]
                if trace is not None:
                    trace.append(A)
                positive = np.maximum(A, 0)
                with_all, with_positive = _times(A, upper_bias), _times(positive, upper_bias)
                term = with_all - with_positive
                A = A * upper_slope[:, None, :] + positive * (lower_slope - upper_slope[:, None, :])
                bias, magnitude = bias + term, magnitude - term + 2 * with_positive
        lo, hi = box  # linear.concretize
        A_abs = np.abs(A)
        value = _times(A, (lo + hi) / 2) - _times(A_abs, (hi - lo) / 2) + bias
        size = _times(A_abs, np.maximum(np.abs(lo), np.abs(hi)) + self.tiny) + magnitude \
            + (2 * lo.shape[1] + 1) * self.tiny
        return widen_lower(value, size + forward, self.rel), A


@dataclass(frozen=True)
class Layers:
    """What ``Bounder.layers`` found over a batch of boxes: the boxes, each ReLU layer's relaxation (lower
    slope, upper slope, upper bias; (B, width) each), and the rows' forward magnitude and interval bound."""

    box: tuple[np.ndarray, np.ndarray]
    relaxations: list
    forward: np.ndarray
    interval: np.ndarray
    pre: list  # every ReLU layer's input bounds, (lower, upper), (B, width) each

    def take(self, index: np.ndarray) -> "Layers":
        """The same for the boxes ``index`` only."""
        return Layers(tuple(v[index] for v in self.box), [tuple(v[index] for v in r) for r in self.relaxations],
                      self.forward[index], self.interval[index], [tuple(v[index] for v in r) for r in self.pre])

    def flat(self) -> np.ndarray:
        """(B, 2 * ReLUs): the ReLU input bounds in one array, a ``prior`` for ``Bounder.layers``."""
        return np.concatenate([v for bounds in self.pre for v in bounds] or [np.zeros((len(self.interval), 0))],
                              axis=1)

    @staticmethod
    def pick(tried: Sequence["Layers"], which: np.ndarray) -> "Layers":
        """Box i's layers from ``tried[which[i]]`` (each over the same number of boxes)."""
        boxes = np.arange(len(which))
        stack = lambda parts: np.stack(parts)[which, boxes]  # noqa: E731
        return Layers(tuple(stack(v) for v in zip(*(t.box for t in tried))),
                      [tuple(stack(v) for v in zip(*r)) for r in zip(*(t.relaxations for t in tried))],
                      stack([t.forward for t in tried]), stack([t.interval for t in tried]),
                      [tuple(stack(v) for v in zip(*r)) for r in zip(*(t.pre for t in tried))])


def _times(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(B, R): rows A (R, N) or (B, R, N) times per-box vectors v (B, N), or one vector v (N,)."""
    if v.ndim == 1:
        return A @ v
    return v @ A.T if A.ndim == 2 else np.matmul(A, v[:, :, None])[:, :, 0]


def _relax(lo: np.ndarray, hi: np.ndarray):
    """crown.relax: upper chord, lower slope 1 where u >= -l (unstable), identity or zero when stable."""
    active = lo >= 0
    unstable = ~active & ~(hi <= 0)
    ones = active.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        upper_slope = np.where(unstable, hi / np.where(unstable, hi - lo, 1), ones)
    upper_bias = np.where(unstable, -upper_slope * lo, 0.0)
    lower_slope = np.where(unstable, (hi >= -lo).astype(np.float64), ones)
    return lower_slope, upper_slope, upper_bias


# ---- the search: attack, then input splitting, within a budget

@dataclass(frozen=True)
class Spec:
    """The conjunctions of one disjunct stacked as rows ``C @ y <= rhs`` (a conjunction of several rows also
    gets their sum, as in ``bab.search.stack_constraints``), and each conjunction's row slice."""

    C: np.ndarray
    rhs: np.ndarray
    groups: tuple[slice, ...]

    @classmethod
    def of(cls, constraints) -> "Spec":
        rows, rhs, groups, start = [], [], [], 0
        for A, b in constraints:
            A, b = np.atleast_2d(np.asarray(A, np.float64)), np.asarray(b, np.float64).ravel()
            if len(A) > 1:
                A, b = np.vstack([A, A.sum(axis=0)]), np.append(b, b.sum())
            rows.append(A)
            rhs.append(b)
            groups.append(slice(start, start + len(A)))
            start += len(A)
        return cls(np.concatenate(rows), np.concatenate(rhs), tuple(groups))

    def margin(self, lower: np.ndarray) -> np.ndarray:
        """(B,) min over conjunctions of the best row's ``lower - rhs``: > 0 exactly where all are refuted."""
        gap = lower - self.rhs
        per = [gap[:, g].max(axis=1) if g.stop > g.start else np.full(len(gap), -np.inf) for g in self.groups]
        return np.min(per, axis=0)

    def shortfall(self, lower: np.ndarray) -> np.ndarray:
        """(B,) bab.branching.shortfall_of: sum of the rows' negative gaps, 0 where refuted."""
        finite = np.isfinite(self.rhs)
        gap = np.minimum(lower - self.rhs, 0.0)[:, finite].sum(axis=1)
        return np.where(self.margin(lower) > 0, 0.0, gap)

    def best_rows(self, lower: np.ndarray) -> np.ndarray:
        """(B, conjunctions): per box, the row of each conjunction nearest to refuting it (alpha-CROWN's
        target: one refuted row refutes its conjunction)."""
        gap = lower - self.rhs
        return np.stack([g.start + gap[:, g].argmax(axis=1) for g in self.groups if g.stop > g.start], axis=1)

    def open_rows(self, lower: np.ndarray) -> np.ndarray:
        """(R,) bool: the rows of every conjunction that some box's bounds do not yet refute (all rows if none)."""
        need = np.zeros(len(self.rhs), dtype=bool)
        gap = lower - self.rhs
        for g in self.groups:
            if g.stop > g.start and not bool((gap[:, g] > 0).any(axis=1).all()):
                need[g] = True
        return need if need.any() else np.ones_like(need)

    def violation(self, y: np.ndarray, aim: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(P,) how far each output is from meeting some conjunction (<= 0: it meets one), and the row to
        push down: the worst row (original rows only, not the sums) of the closest conjunction, or of
        conjunction ``aim[p]`` where that is >= 0 (as ``bab.attack``'s descents aim at each in turn)."""
        gap = y.astype(np.float64) @ self.C.T - self.rhs
        worst, rows = [], []
        for g in self.groups:
            width = g.stop - g.start - (1 if g.stop - g.start > 1 else 0)
            if width == 0:  # an empty conjunction: every output meets it
                return np.full(len(y), -np.inf), np.zeros(len(y), dtype=int)
            part = gap[:, g.start:g.start + width]
            worst.append(part.max(axis=1))
            rows.append(g.start + part.argmax(axis=1))
        worst, rows = np.stack(worst, axis=1), np.stack(rows, axis=1)
        pick = worst.argmin(axis=1)
        if aim is not None:
            pick = np.where(aim >= 0, aim, pick)
        return worst.min(axis=1), rows[np.arange(len(y)), pick]


@dataclass
class Outcome:
    verdict: Verdict | None  # None: not decided within the budget
    x: np.ndarray | None = None
    domains: int = 0
    decided_by: str = ""


def decide(chain: Chain, disjunct: Disjunct, replay, deadline: Deadline, max_domains: int = 20_000,
           seed: int = 0, rel: float = REL, inside: bool = False) -> Outcome:
    """One box: a replayed counterexample, a proof by input splitting (bounds widened by ``rel``), or None when
    ``deadline`` or ``max_domains`` ends it first. ``replay(x)`` confirms a float32 input on the original model.
    Candidates are the float32 roundings of the box's points or, with ``inside`` (real arithmetic), the float32
    points of the box itself."""
    spec = Spec.of(disjunct.constraints)
    inner = float32_box(disjunct.lower, disjunct.upper, outward=False) if inside else \
        tuple(np.asarray(v, np.float64).astype(np.float32) for v in (disjunct.lower, disjunct.upper))
    outer = tuple(v.astype(np.float64) for v in float32_box(disjunct.lower, disjunct.upper, outward=True))
    rng = np.random.default_rng(seed)
    x = _attack(chain, spec, inner, replay, rng, deadline.share(ATTACK_SHARE))
    if x is not None:
        return Outcome(Verdict.FALSIFIED, x, 0, "fast-path attack")
    bounder = Bounder(chain, spec.C, rel, deadline)
    try:
        return _split_search(chain, spec, inner, outer, replay, deadline, max_domains, bounder)
    except _OutOfTime:
        return Outcome(None, domains=bounder.boxes)


def _split_search(chain, spec, inner, outer, replay, deadline, max_domains, bounder) -> Outcome:
    """Input splitting with ``bounder``'s CROWN bounds until every box is proven, a box centre replays, or the
    deadline or ``max_domains`` bounded boxes end it. A box is bounded once: the look-ahead that chooses how
    to halve its parent bounds it, and only boxes those bounds leave open are queued, with them. A half that
    CROWN leaves open after ``ALPHA_DEPTH`` halvings gets alpha-CROWN's optimised slopes (``fastalpha``) before
    it is queued: on small boxes the relaxation, not the box, is what keeps a near tie open."""
    lower, coefficients, layers = bounder.bound(outer[0][None], outer[1][None])
    # ReLU bounds are queued (inherited) and alpha-CROWN runs on small chains only: a large convolutional one
    # would hold (boxes x neurons) arrays per look-ahead candidate
    small = sum(bounder.relu_widths) <= MAX_NEURONS
    queue = [outer[0][None], outer[1][None], lower, coefficients, layers.flat() if small else np.zeros((1, 0))]
    free = outer[1] > outer[0]  # fixed coordinates are never halved
    splits = int(free.sum()) <= INPUT_SPLIT_DIMS
    while len(queue[0]):
        if deadline.expired() or bounder.boxes >= max_domains:
            return Outcome(None, domains=bounder.boxes)
        lo, hi, lower, coefficients, prior = (a[-BATCH:] for a in queue)
        queue = [a[:-BATCH] for a in queue]
        open_ = spec.margin(lower) <= 0
        if not open_.any():
            continue
        lo, hi, lower, coefficients, prior = lo[open_], hi[open_], lower[open_], coefficients[open_], prior[open_]
        candidates = np.concatenate([(lo + hi) / 2, _corners(lo, hi, coefficients, lower - spec.rhs)])
        x = _check_points(chain, spec, candidates, inner, replay)
        if x is not None:
            return Outcome(Verdict.FALSIFIED, x, bounder.boxes, "fast-path split")
        if deadline.expired() or not splits:  # the look-ahead below bounds six times as many boxes
            return Outcome(None, domains=bounder.boxes)
        parents = np.tile(lower, (2, 1))  # hold on the halves too, and CROWN on a half can be looser
        inherited = np.tile(prior, (2, 1)) if small else None  # the same for the ReLU bounds

        def bound(a, b):
            half_lower, half_coefficients, layers = bounder.bound(a, b, inherited)
            return np.maximum(half_lower, parents), half_coefficients, layers if small else None

        children = _split(lo, hi, coefficients, spec.open_rows(lower), bound, spec.shortfall)
        if children is None:
            return Outcome(None, domains=bounder.boxes)
        *children, layers = children
        keep = spec.margin(children[2]) <= 0
        halvings = np.log2((outer[1] - outer[0])[free] / (children[1] - children[0])[:, free]).sum(axis=1)
        deep = np.flatnonzero(keep & (halvings >= ALPHA_DEPTH - 0.5))
        if deep.size and ALPHA_STEPS and small:
            # only to close boxes: queued with CROWN's bounds, the look-ahead's comparisons stay CROWN's
            alpha = optimised_lower(bounder, layers.take(deep), ALPHA_STEPS, rows=spec.best_rows(children[2][deep]),
                                    floor=children[2][deep], margin=spec.margin)
            keep[deep] = spec.margin(alpha) <= 0
        children.append(layers.flat() if small else np.zeros((len(keep), 0)))
        queue = [np.concatenate([a, c[keep]]) for a, c in zip(queue, children)]
    return Outcome(Verdict.VERIFIED, None, bounder.boxes, "fast-path CROWN input split")


def _split(lo: np.ndarray, hi: np.ndarray, coefficients: np.ndarray, rows: np.ndarray, bound, shortfall):
    """Each box halved as ``bab.branching.choose_input_dims_sb`` chooses with its look-ahead: ``bound(lo, hi)``
    gives the lower bounds (2B, R), input coefficients and ``Layers`` (or None) of the halves along one candidate
    dimension per box, ``shortfall(lower)`` their ``bab.branching.shortfall_of``. Returns both halves of every
    box (first halves, then second halves) with their bounds, coefficients and layers, or None when a box
    cannot be halved (its chosen coordinate is a single float)."""
    width = hi - lo
    score = (np.maximum(np.abs(coefficients[:, rows]), COEFFICIENT_FLOOR) * width[:, None, :]).sum(axis=1)
    score = np.where(width > 0, score, -1.0)
    count = max(1, min(LOOKAHEAD_DIMS, int((width > 0).sum(axis=1).min())))
    candidates = np.argsort(-score, axis=1, kind="stable")[:, :count]
    gains, tried = [], []
    for column in candidates.T:
        tried.append(bound(*_halves(lo, hi, column)))
        halves = shortfall(tried[-1][0])
        gains.append(halves[: len(lo)] + halves[len(lo):])
    best = np.argmax(np.stack(gains, axis=1), axis=1)
    halves = _halves(lo, hi, candidates[np.arange(len(lo)), best], exact=True)
    if halves is None:
        return None
    which, boxes = np.concatenate([best, best]), np.arange(2 * len(lo))
    return (*halves, np.stack([t[0] for t in tried])[which, boxes],
            np.stack([np.broadcast_to(t[1], (2 * len(lo), *t[1].shape[-2:])) for t in tried])[which, boxes],
            None if tried[0][2] is None else Layers.pick([t[2] for t in tried], which))


def _halves(lo: np.ndarray, hi: np.ndarray, dim: np.ndarray, exact: bool = False):
    """Both halves of each box along ``dim`` (first halves, then second halves); with ``exact``, None when a
    chosen coordinate has no float strictly inside."""
    rows = np.arange(len(lo))
    mid = (lo[rows, dim] + hi[rows, dim]) / 2
    if exact and np.any((mid <= lo[rows, dim]) | (mid >= hi[rows, dim])):
        return None
    left_hi, right_lo = hi.copy(), lo.copy()
    left_hi[rows, dim] = mid
    right_lo[rows, dim] = mid
    return np.concatenate([lo, right_lo]), np.concatenate([left_hi, hi])


def _agrees_with_runtime(chain: Chain, runtime: OnnxRuntimeModel, prop: VnnlibProperty) -> bool:
    """Whether onnxruntime, running the file, computes what the chain read from it does (at each box's centre and
    corners, within float32 summation-order differences): a proof about the chain is one about the file."""
    points = []
    for disjunct in prop.disjuncts:
        lo, hi = (np.asarray(v, np.float64).ravel().astype(np.float32) for v in (disjunct.lower, disjunct.upper))
        points += [lo, hi, ((lo.astype(np.float64) + hi) / 2).astype(np.float32)]
    x = np.stack(points)
    ours = chain.forward(x)[0].astype(np.float64)
    theirs = runtime(x.reshape(len(x), *chain.input_shape)).astype(np.float64)
    scale = 1.0 + np.abs(theirs).max()
    return theirs.shape == ours.shape and bool(np.all(np.abs(ours - theirs) <= PARITY * scale))


def _corners(lo: np.ndarray, hi: np.ndarray, coefficients: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """(B * k, n): per box, the corners where the linear lower bounds of its ``CORNER_ROWS`` rows farthest from
    a proof are least (``bab.search.bound_corners``)."""
    k = min(CORNER_ROWS, gap.shape[1])
    rows = np.argsort(gap, axis=1, kind="stable")[:, :k]
    A = np.take_along_axis(coefficients, rows[:, :, None], axis=1)
    return np.where(A > 0, lo[:, None, :], hi[:, None, :]).reshape(-1, lo.shape[1])


def _check_points(chain: Chain, spec: Spec, points: np.ndarray, inner, replay) -> np.ndarray | None:
    """The first of ``points`` (clipped into the float32 box) that meets the constraints and replays."""
    x = np.clip(points.astype(np.float32), inner[0], inner[1])
    y, _ = chain.forward(x)
    gap, _ = spec.violation(y)
    for i in np.flatnonzero(gap <= 0):
        if replay(x[i]):
            return x[i]
    return None


def _attack(chain: Chain, spec: Spec, inner, replay, rng, deadline: Deadline, steps: int = 80, work: float = 8e8):
    """Projected signed-gradient descent on the violation of the closest conjunction (with K > 1 of them,
    restart r aims at conjunction r mod (K + 1) instead, unless that is K), from the centre and random points
    (as many as ``work`` multiply-adds allow, 4 to 512); every point it passes is checked, the first that
    replays is returned."""
    lo, hi = inner
    restarts = int(np.clip(work / (steps * chain.macs), 4, 512))
    width = (hi - lo).astype(np.float32)
    x = (lo + rng.random((restarts, lo.size), dtype=np.float32) * width).astype(np.float32)
    x[0] = np.clip((lo.astype(np.float64) + hi) / 2, lo, hi)
    conjunctions = len(spec.groups)
    aim = None  # with several conjunctions, restart r aims at conjunction r mod (K + 1), the nearest when K
    if conjunctions > 1:
        aim = np.arange(restarts) % (conjunctions + 1)
        aim[aim == conjunctions] = -1
    for step in range(steps):
        if deadline.expired():
            return None
        y, masks = chain.forward(x)
        gap, row = spec.violation(y, aim)
        for i in np.flatnonzero(gap <= 0):
            if replay(x[i]):
                return x[i]
        grad = spec.C[row].astype(np.float32)  # d(row of C @ y)/dy, then back through the layers
        for k in range(len(chain.weights) - 1, -1, -1):
            grad = back(grad, chain.weights[k])
            if k > 0:
                grad = grad * masks[k - 1]
        size = np.float32(0.25 * 0.93**step)
        x = np.clip(x - size * width * np.sign(grad), lo, hi).astype(np.float32)
    return None


def try_vnnlib(model: str | Path, prop: VnnlibProperty, deadline: Deadline, budget: float = BUDGET,
               max_domains: int = 20_000, arithmetic: str = "float32") -> tuple[Result | None, dict]:
    """Decide the property within ``budget`` seconds (of ``deadline``) and ``max_domains`` boxes per disjunct,
    or None; the details say what was tried. A proof is about the float32 model or, with ``arithmetic="real"``,
    the real-valued network (``ARITHMETIC``); a counterexample is always one that onnxruntime replays."""
    started = time.perf_counter()
    try:
        chain = read_chain(model)
    except (NotAChain, OSError, IndexError, ValueError, struct.error) as error:
        return None, {"fast_path": f"not taken: {error}"}
    check_matches(prop, int(np.prod(chain.input_shape)), len(chain.biases[-1]))
    runtime = []

    def replay(x: np.ndarray) -> bool:
        if not runtime:
            runtime.append(OnnxRuntimeModel(model))
        y = runtime[0].run_flat(x).astype(np.float64)
        if not any(bool(np.all(np.atleast_2d(A) @ y <= np.ravel(b))) for A, b in disjunct.constraints):
            return False
        if arithmetic != "real":
            return True  # the float32 inputs of the box are the roundings of its points (README)
        # under real arithmetic the point must lie in the box itself and be a counterexample of the exact
        # network too (realcheck.py)
        point = np.ravel(x).astype(np.float64)
        inside = np.all(np.ravel(disjunct.lower) <= point) and np.all(point <= np.ravel(disjunct.upper))
        return bool(inside) and holds_for_real(*chain_outputs(chain.weights, chain.biases, x, apply),
                                               disjunct.constraints)

    within, boxes = deadline.within(budget), []
    for index, disjunct in enumerate(prop.disjuncts):
        outcome = decide(chain, disjunct, replay, within, max_domains, rel=ARITHMETIC[arithmetic],
                         inside=arithmetic == "real")
        boxes.append({"box": f"box{index}", "verdict": outcome.verdict.value if outcome.verdict else "open",
                      "decided_by": outcome.decided_by, "domains": outcome.domains})
        seconds = time.perf_counter() - started
        details = {"boxes": boxes, "fast_path": f"{seconds:.3f} s", "arithmetic": arithmetic}
        if outcome.verdict is Verdict.FALSIFIED:
            y = runtime[0].run_flat(outcome.x)
            example = Counterexample(outcome.x.ravel(), y, replayed=True)
            return Result(Verdict.FALSIFIED, counterexample=example, seconds=deadline.elapsed(), settings=details), details
        if outcome.verdict is None:
            return None, details
    if not runtime:
        runtime.append(OnnxRuntimeModel(model))  # a file onnxruntime cannot run is refused (ModelError), not proven
    if not _agrees_with_runtime(chain, runtime[0], prop):
        details["fast_path"] = "not taken: onnxruntime's outputs differ from the weights read from the file"
        return None, details
    certificate = Certificate("fast-path input splitting", {"boxes": boxes, "arithmetic": arithmetic})
    return Result(Verdict.VERIFIED, certificate=certificate, seconds=deadline.elapsed(), settings=details), details
