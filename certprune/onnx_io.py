"""ONNX -> Network and back. The reader is ours: it walks the ONNX graph in order and builds a graph of layers."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from certprune.deadline import Deadline
from certprune.errors import ModelError, UnsupportedLayerError
from certprune.fold import fold_affine
from certprune.network import (INPUT, Add, Affine, Concat, Conv2d, Dense, Flatten, Layer, MaxPool2d, Network, Pad,
                               ReLU, Reshape, Transpose)

WRITE_OPSET = 17
UNBATCHED = 0  # the "fixed batch" of a model whose input is one vector without a batch dimension


@dataclass(frozen=True)
class _Value:
    """An activation (as opposed to a constant): the network input (INPUT) or a layer's output."""

    index: int
    transformed: bool = False  # past the final Sigmoid/Softmax


@dataclass
class _Graph:
    """Reader state: layers so far with their wiring and output shapes, and the final transform."""

    input_shape: tuple[int, ...]
    fixed_batch: int | None
    layers: list[Layer] = field(default_factory=list)
    wiring: list[tuple[int, ...]] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    transform: str | None = None
    transform_at: str = ""  # where the final Sigmoid/Softmax is, for errors about what follows it

    def shape(self, value: _Value) -> tuple[int, ...]:
        return self.input_shape if value.index == INPUT else self.shapes[value.index]

    def append(self, layer: Layer, *sources: _Value) -> _Value:
        shape = layer.output_shape(*(self.shape(v) for v in sources))
        self.layers.append(layer)
        self.wiring.append(tuple(v.index for v in sources))
        self.shapes.append(shape)
        return _Value(len(self.layers) - 1)

    def network(self, output: _Value, input_name: str, output_name: str, metadata: dict) -> Network:
        """The layers the output depends on (in their order), folded, in float32."""
        if output.index == INPUT:
            raise ModelError("the model computes nothing: its output is its input")
        needed, stack = set(), [output.index]
        while stack:
            i = stack.pop()
            if i != INPUT and i not in needed:
                needed.add(i)
                stack.extend(self.wiring[i])
        kept = sorted(needed)
        renumber = {old: new for new, old in enumerate(kept)} | {INPUT: INPUT}
        network = Network(tuple(self.layers[i] for i in kept), self.input_shape, self.transform, input_name,
                          output_name, metadata, tuple(tuple(renumber[j] for j in self.wiring[i]) for i in kept))
        return fold_affine(network).to(torch.float32)


def load_onnx(path: str | Path, deadline: Deadline | None = None) -> Network:
    """Read an ONNX ReLU network into a Network (float32), folding normalisation and BatchNorm.

    With a ``deadline``, raises ``DeadlineExpired`` once it passes (checked after reading and per node).
    """
    deadline = deadline or Deadline.never()
    model = _read_model(Path(path))
    deadline.check(f"loading {path}")
    try:
        return _network(model, path, deadline)
    except ModelError as error:  # which model: a gate reads a baseline too
        if str(path) in str(error):
            raise
        raise type(error)(f"{path}: {error}") from error.__cause__


def _network(model: onnx.ModelProto, path, deadline: Deadline) -> Network:
    graph = model.graph
    constants = _initializers(graph)
    graph_input = _single_input(graph, constants)
    _check_float32(graph_input, graph.output)
    batch, shape = _input_shape(graph_input)
    builder = _Graph(input_shape=shape, fixed_batch=batch)
    env: dict[str, object] = dict(constants)
    env[graph_input.name] = _Value(INPUT)
    for position, node in enumerate(graph.node):
        _apply(node, position, env, builder)
        deadline.check(f"loading {path}")
    if len(graph.output) != 1:
        raise ModelError(f"model has {len(graph.output)} outputs; certprune supports one")
    result = env.get(graph.output[0].name)
    if not isinstance(result, _Value):
        raise ModelError(f"graph output '{graph.output[0].name}' does not depend on the input")
    metadata = {p.key: p.value for p in model.metadata_props}
    return builder.network(result, graph_input.name, graph.output[0].name, metadata)


def _read_model(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path} is not a readable ONNX model ({type(error).__name__}); "
                         "is the file truncated or of another format?") from error
    if not model.graph.node:
        raise ModelError(f"{path} is not a readable ONNX model: its graph has no operators")
    return model


def _initializers(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    constants = {}
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor)
        _check_finite(array, f"initializer '{tensor.name}'")
        constants[tensor.name] = array
    return constants


def _check_finite(array: np.ndarray, what: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = "NaN" if np.isnan(array).any() else "Inf"
        raise ModelError(f"{what} contains {bad} values")


def _single_input(graph: onnx.GraphProto, constants: dict) -> onnx.ValueInfoProto:
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in inputs)
        raise ModelError(f"model has {len(inputs)} inputs ({names}); certprune supports exactly one")
    return inputs[0]


def _check_float32(graph_input: onnx.ValueInfoProto, outputs) -> None:
    """A proof is about the float32 model that onnxruntime runs; a model of another precision is another model."""
    for value in [graph_input, *outputs]:
        elem = value.type.tensor_type.elem_type
        if elem not in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.FLOAT):
            name = onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else str(elem)
            raise ModelError(f"'{value.name}' is a tensor of {name}; certprune verifies float32 models "
                             "(export the model in float32, e.g. model.float() before torch.onnx.export)")


def _input_shape(value: onnx.ValueInfoProto) -> tuple[int | None, tuple[int, ...]]:
    """(fixed batch size or None for a symbolic one, per-sample shape)."""
    dims = value.type.tensor_type.shape.dim
    if len(dims) == 1 and dims[0].HasField("dim_value"):
        return UNBATCHED, (dims[0].dim_value,)  # one sample without a batch dimension (VNN-COMP's test nets)
    if len(dims) < 2:
        raise ModelError(f"input '{value.name}' has rank {len(dims)}; expected a batch dimension and features")
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
    shape = []
    for dim in dims[1:]:
        if not dim.HasField("dim_value"):
            raise ModelError(f"input '{value.name}' has a symbolic non-batch dimension '{dim.dim_param}'")
        shape.append(dim.dim_value)
    return batch, tuple(shape)


def _apply(node: onnx.NodeProto, position: int, env: dict, builder: _Graph) -> None:
    where = f"node '{node.name or node.output[0]}' at position {position}"
    if node.domain not in ("", "ai.onnx"):
        raise UnsupportedLayerError(f"unsupported operator {node.domain}.{node.op_type} ({where}); only the "
                                    "standard ONNX domain is read")
    inputs = [env.get(name) if name else None for name in node.input]
    for name, value in zip(node.input, inputs):
        if name and value is None:
            raise ModelError(f"{where} reads '{name}', which nothing defines")
    acts = [v for v in inputs if isinstance(v, _Value)]
    if not acts:
        outputs = _constant_op(node, inputs, where)
    else:
        done = [v for v in acts if v.transformed]
        if done:
            raise UnsupportedLayerError(
                f"{builder.transform.capitalize()} ({builder.transform_at}) is supported only as the model's last "
                f"operation, but {node.op_type} ({where}) reads its output")
        outputs = [_activation_op(node, inputs, builder, where)]
    for name, value in zip(node.output, outputs):
        env[name] = value


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


# ---- operators on activations ---------------------------------------------------------------

def _activation_op(node, inputs, g: _Graph, where: str) -> _Value:
    op = node.op_type
    handler = _ACTIVATION_OPS.get(op)
    if handler is None:
        raise UnsupportedLayerError(f"unsupported operator {op} ({where}); supported on activations: "
                                    f"{', '.join(sorted(_ACTIVATION_OPS))}")
    try:
        return handler(node, inputs, g, where)
    except ModelError as error:  # a shape that does not fit: say which node
        if where in str(error):
            raise
        raise type(error)(f"{error} ({where})") from error


def _pass(node, inputs, g, where):
    return inputs[0]


def _relu(node, inputs, g, where):
    return g.append(ReLU(), inputs[0])


def _transform(node, inputs, g, where):
    x = inputs[0]
    if node.op_type == "Softmax":
        # On a flat per-sample vector the default axis of every opset (1 before 13, -1 after) is the last.
        axis = _attrs(node).get("axis", -1)
        if axis not in (-1, 1) or len(g.shape(x)) != 1:
            raise UnsupportedLayerError(f"Softmax over axis {axis} of a {len(g.shape(x)) + 1}-D tensor ({where})")
    g.transform, g.transform_at = node.op_type.lower(), where
    return _Value(x.index, transformed=True)


def _flatten(node, inputs, g, where):
    axis = _attrs(node).get("axis", 1)
    if axis != 1:
        raise UnsupportedLayerError(f"Flatten with axis {axis} ({where}); only axis 1 keeps the batch")
    x = inputs[0]
    return g.append(Flatten(), x) if len(g.shape(x)) > 1 else x


def _reshape(node, inputs, g, where):
    x = inputs[0]
    shape = g.shape(x)
    target = [int(d) for d in np.asarray(_constant(inputs[1], "shape", where)).ravel()]
    if not target or target[0] not in (-1, 0, g.fixed_batch or -1):
        raise UnsupportedLayerError(f"Reshape to {target} changes the batch dimension ({where})")
    size = math.prod(shape)
    rest = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(target[1:])]
    if rest.count(-1) == 1:
        known = math.prod(d for d in rest if d != -1)
        rest = [size // known if d == -1 else d for d in rest]
    rest = tuple(rest)
    if -1 in rest or math.prod(rest) != size:
        raise UnsupportedLayerError(f"Reshape to {target} regroups the batch ({where})")
    if rest == shape:
        return x
    return g.append(Flatten() if rest == (size,) else Reshape(rest), x)


def _transpose(node, inputs, g, where):
    x = inputs[0]
    perm = list(_attrs(node).get("perm", reversed(range(len(g.shape(x)) + 1))))
    if perm[0] != 0:
        raise UnsupportedLayerError(f"Transpose {perm} moves the batch dimension ({where})")
    perm = tuple(p - 1 for p in perm[1:])
    return x if perm == tuple(range(len(perm))) else g.append(Transpose(perm), x)


def _gemm(node, inputs, g, where):
    a = _attrs(node)
    if not isinstance(inputs[0], _Value) or a.get("transA", 0):
        raise UnsupportedLayerError(f"Gemm with the activation as B or transposed ({where})")
    b = _constant(inputs[1], "B", where).astype(np.float64)
    weight = b if a.get("transB", 0) else b.T
    weight = a.get("alpha", 1.0) * weight
    bias = np.zeros(weight.shape[0])
    if len(inputs) > 2 and inputs[2] is not None:
        c = _constant(inputs[2], "C", where).astype(np.float64)
        bias = a.get("beta", 1.0) * np.broadcast_to(c.reshape(-1) if c.size == weight.shape[0] else c,
                                                     (weight.shape[0],))
    return _dense(weight, bias, inputs[0], g, where)


def _matmul(node, inputs, g, where):
    if not isinstance(inputs[0], _Value):
        if g.fixed_batch == UNBATCHED and isinstance(inputs[1], _Value) and len(g.shape(inputs[1])) == 1:
            w = _constant(inputs[0], "A", where).astype(np.float64)  # W @ x on one vector
            if w.ndim == 2:
                return _dense(w, np.zeros(w.shape[0]), inputs[1], g, where)
        raise UnsupportedLayerError(f"MatMul with a constant on the left ({where})")
    if isinstance(inputs[1], _Value):
        raise UnsupportedLayerError(f"MatMul of two activations ({where}); the network would not be piecewise linear")
    b = _constant(inputs[1], "B", where).astype(np.float64)
    if b.ndim != 2:
        raise UnsupportedLayerError(f"MatMul with a {b.ndim}-D weight ({where})")
    return _dense(b.T, np.zeros(b.shape[1]), inputs[0], g, where)


def _dense(weight: np.ndarray, bias: np.ndarray, x: _Value, g: _Graph, where: str) -> _Value:
    shape = g.shape(x)
    if len(shape) != 1 or shape[0] != weight.shape[1]:
        raise UnsupportedLayerError(
            f"dense layer with {weight.shape[1]} inputs applied to a tensor of shape {shape} ({where})")
    return g.append(Dense(torch.tensor(weight), torch.tensor(np.array(bias, dtype=np.float64))), x)


def _elementwise(node, inputs, g, where):
    """Add/Sub of two activations joins them; Add/Sub/Mul/Div of an activation and a constant is an Affine
    layer, folded later."""
    op = node.op_type
    if all(isinstance(v, _Value) for v in inputs[:2]):
        if op not in ("Add", "Sub"):
            raise UnsupportedLayerError(f"{op} of two activations ({where}); the network would not be piecewise linear")
        a, b = inputs[:2]
        if g.shape(a) != g.shape(b):
            raise UnsupportedLayerError(f"{op} of activations of shapes {g.shape(a)} and {g.shape(b)} ({where}); "
                                        "broadcasting between activations is not supported")
        if op == "Sub":
            shape = g.shape(b)
            minus = Affine(torch.full(shape, -1.0, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64))
            b = g.append(minus, b)
        return g.append(Add(), a, b)
    act_first = isinstance(inputs[0], _Value)
    x = inputs[0] if act_first else inputs[1]
    shape = g.shape(x)
    const = _broadcast_constant(inputs[1] if act_first else inputs[0], shape, g.fixed_batch, where)
    ones, zeros = np.ones(shape), np.zeros(shape)
    if op == "Add":
        scale, shift = ones, const
    elif op == "Sub":
        scale, shift = (ones, -const) if act_first else (-ones, const)
    elif op == "Mul":
        scale, shift = const, zeros
    elif act_first:  # Div by a constant
        if (const == 0).any():
            raise ModelError(f"division by zero in {where}")
        scale, shift = 1.0 / const, zeros
    else:
        raise UnsupportedLayerError(f"Div of a constant by the activation ({where})")
    return g.append(Affine(torch.tensor(scale), torch.tensor(shift)), x)


def _broadcast_constant(value, shape: tuple[int, ...], fixed_batch: int | None, where: str) -> np.ndarray:
    const = _constant(value, "operand", where).astype(np.float64)
    if fixed_batch == UNBATCHED:  # no batch dimension: the constant broadcasts over the sample itself
        const = const[None]
    full = (fixed_batch or 1,) + shape
    try:
        if np.broadcast_shapes(full, const.shape) != full:
            raise ValueError
    except ValueError:
        raise UnsupportedLayerError(
            f"constant of shape {const.shape} does not broadcast over the activation {shape} ({where})") from None
    return np.broadcast_to(const, full)[0].copy()


def _concat(node, inputs, g, where):
    if not all(isinstance(v, _Value) for v in inputs):
        raise UnsupportedLayerError(f"Concat of an activation and a constant ({where})")
    rank = len(g.shape(inputs[0])) + 1
    axis = _attrs(node)["axis"] % rank
    if axis == 0:
        raise UnsupportedLayerError(f"Concat along the batch dimension ({where})")
    return g.append(Concat(axis - 1), *inputs)


def _pads_2d(a: dict, kernel, strides, dilations, shape, where: str) -> list[int]:
    """[top, left, bottom, right] from pads or auto_pad (SAME_UPPER puts the odd pixel at the end)."""
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", "VALID"):
        pads = list(a.get("pads", [0, 0, 0, 0])) if auto_pad == "NOTSET" else [0, 0, 0, 0]
        return pads
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedLayerError(f"auto_pad={auto_pad} ({where})")
    begin, end = [], []
    for i in range(2):
        out = -(-shape[1 + i] // strides[i])
        total = max(0, (out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - shape[1 + i])
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def _with_padding(x: _Value, pads: list[int], g: _Graph) -> tuple[_Value, tuple[int, int]]:
    """Symmetric pads stay with the layer; asymmetric ones become a zero Pad layer before it."""
    if pads[:2] == pads[2:]:
        return x, (pads[0], pads[1])
    return g.append(Pad((0, pads[0], pads[1]), (0, pads[2], pads[3])), x), (0, 0)


def _conv(node, inputs, g, where):
    a = _attrs(node)
    x = inputs[0]
    shape = g.shape(x)
    weight = _constant(inputs[1], "weight", where).astype(np.float64)
    if weight.ndim != 4 or len(shape) != 3:
        raise UnsupportedLayerError(f"Conv that is not 2-D ({where})")
    strides, dilations = tuple(a.get("strides", [1, 1])), tuple(a.get("dilations", [1, 1]))
    pads = _pads_2d(a, weight.shape[2:], strides, dilations, shape, where)
    bias = (_constant(inputs[2], "bias", where).astype(np.float64) if len(inputs) > 2 and inputs[2] is not None
            else np.zeros(weight.shape[0]))
    x, padding = _with_padding(x, pads, g)
    return g.append(Conv2d(torch.tensor(weight), torch.tensor(bias), strides, padding, dilations, a.get("group", 1)), x)


def _maxpool(node, inputs, g, where):
    a = _attrs(node)
    x = inputs[0]
    shape = g.shape(x)
    kernel = tuple(a["kernel_shape"])
    if len(kernel) != 2 or len(shape) != 3:
        raise UnsupportedLayerError(f"MaxPool that is not 2-D ({where})")
    if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])) or len(node.output) > 1:
        raise UnsupportedLayerError(f"MaxPool with ceil_mode, dilations or indices output ({where})")
    strides = tuple(a.get("strides", [1, 1]))
    pads = _pads_2d(a, kernel, strides, (1, 1), shape, where)
    if pads[:2] != pads[2:]:
        raise UnsupportedLayerError(f"MaxPool with asymmetric pads {pads} ({where})")
    return g.append(MaxPool2d(kernel, strides, (pads[0], pads[1])), x)


def _average_pool(node, inputs, g, where):
    """AveragePool and GlobalAveragePool as a depthwise convolution with weights 1 / (kernel size)."""
    a = _attrs(node)
    x = inputs[0]
    shape = g.shape(x)
    if len(shape) != 3:
        raise UnsupportedLayerError(f"{node.op_type} that is not 2-D ({where})")
    if node.op_type == "GlobalAveragePool":
        kernel, strides, pads = shape[1:], (1, 1), [0, 0, 0, 0]
    else:
        kernel, strides = tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1]))
        if a.get("ceil_mode", 0):
            raise UnsupportedLayerError(f"AveragePool with ceil_mode ({where})")
        pads = _pads_2d(a, kernel, strides, (1, 1), shape, where)
        if any(pads) and not a.get("count_include_pad", 0):
            raise UnsupportedLayerError(f"AveragePool with padding that is not counted ({where}); the divisor "
                                        "changes at the border: set count_include_pad=1 or pad explicitly")
    channels = shape[0]
    weight = np.full((channels, 1, *kernel), 1.0 / math.prod(kernel))
    x, padding = _with_padding(x, pads, g)
    return g.append(Conv2d(torch.tensor(weight), torch.zeros(channels, dtype=torch.float64), strides, padding,
                           (1, 1), channels), x)


def _reduce_mean(node, inputs, g, where):
    """ReduceMean over the two spatial axes (torch's AdaptiveAvgPool2d(1)): a GlobalAveragePool."""
    a = _attrs(node)
    x = inputs[0]
    shape = g.shape(x)
    rank = len(shape) + 1
    axes = a.get("axes")
    if axes is None and len(inputs) > 1 and inputs[1] is not None:
        axes = _constant(inputs[1], "axes", where).ravel().tolist()
    axes = sorted(int(v) % rank for v in (axes or []))
    if len(shape) != 3 or axes != [2, 3]:
        raise UnsupportedLayerError(f"ReduceMean over axes {axes} of a tensor of shape {shape} ({where}); "
                                    "only the spatial mean of a (C, H, W) activation is supported")
    pooled = _average_pool(helper.make_node("GlobalAveragePool", [], []), [x], g, where)
    return pooled if a.get("keepdims", 1) else g.append(Flatten(), pooled)


def _pad(node, inputs, g, where):
    a = _attrs(node)
    x = inputs[0]
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = list(a["pads"]) if "pads" in a else [int(v) for v in _constant(inputs[1], "pads", where).ravel()]
    value = 0.0
    if len(inputs) > 2 and inputs[2] is not None:
        value = float(np.asarray(_constant(inputs[2], "constant_value", where)).ravel()[0])
    if mode != "constant" or value != 0.0 or len(inputs) > 3:
        raise UnsupportedLayerError(f"Pad in mode {mode} with value {value} or axes ({where}); only zero padding")
    rank = len(g.shape(x)) + 1
    before, after = pads[:rank], pads[rank:]
    if before[0] or after[0] or min(pads) < 0:
        raise UnsupportedLayerError(f"Pad {pads} of the batch dimension or with negative widths ({where})")
    return g.append(Pad(tuple(before[1:]), tuple(after[1:])), x)


def _batchnorm(node, inputs, g, where):
    x = inputs[0]
    shape = g.shape(x)
    scale, bias, mean, var = (_constant(v, "parameter", where).astype(np.float64) for v in inputs[1:5])
    eps = _attrs(node).get("epsilon", 1e-5)
    factor = scale / np.sqrt(var + eps)
    offset = bias - mean * factor
    channel_shape = (-1,) + (1,) * (len(shape) - 1)
    full_scale = np.broadcast_to(factor.reshape(channel_shape), shape).copy()
    full_shift = np.broadcast_to(offset.reshape(channel_shape), shape).copy()
    return g.append(Affine(torch.tensor(full_scale), torch.tensor(full_shift)), x)


def _cast(node, inputs, g, where):
    if _attrs(node).get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        raise UnsupportedLayerError(f"Cast of the activation to a non-float type ({where})")
    return inputs[0]


_ACTIVATION_OPS = {
    "Relu": _relu, "Sigmoid": _transform, "Softmax": _transform, "Flatten": _flatten, "Reshape": _reshape,
    "Transpose": _transpose, "Gemm": _gemm, "MatMul": _matmul, "Add": _elementwise, "Sub": _elementwise,
    "Mul": _elementwise, "Div": _elementwise, "Conv": _conv, "BatchNormalization": _batchnorm, "Identity": _pass,
    "Dropout": _pass, "Cast": _cast, "Concat": _concat, "MaxPool": _maxpool, "AveragePool": _average_pool,
    "GlobalAveragePool": _average_pool, "Pad": _pad, "ReduceMean": _reduce_mean,
}


# ---- operators on constants (shape plumbing, Constant nodes) ------------------------------------

def _constant(value, role: str, where: str) -> np.ndarray:
    if isinstance(value, _Value) or value is None:
        raise UnsupportedLayerError(f"{role} of {where} must be a constant")
    return np.asarray(value)


def _constant_op(node, inputs, where: str) -> list:
    op, a = node.op_type, _attrs(node)
    if op == "Constant":
        if "value" not in a:
            raise UnsupportedLayerError(f"Constant without a tensor value ({where})")
        array = numpy_helper.to_array(a["value"])
        _check_finite(array, f"constant {where}")
        return [array]
    handler = _CONSTANT_OPS.get(op)
    if handler is None:
        raise UnsupportedLayerError(f"unsupported operator {op} on constants ({where})")
    return [handler(a, *inputs)]


def _shape_of_activation(node, inputs, g, where):
    """Shape(x) of the activation: the batch becomes -1 so that a later Reshape keeps it."""
    return np.array((-1,) + g.shape(inputs[0]), dtype=np.int64)


def _axes(a, inputs_axes):
    return tuple(int(v) for v in (a.get("axes") if "axes" in a else np.asarray(inputs_axes).ravel()))


_CONSTANT_OPS = {
    "Identity": lambda a, x: x,
    "Cast": lambda a, x: x.astype(helper.tensor_dtype_to_np_dtype(a["to"])),
    "Transpose": lambda a, x: np.transpose(x, a.get("perm")),
    "Reshape": lambda a, x, s: x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(s.tolist())]),
    "Unsqueeze": lambda a, x, axes=None: np.expand_dims(x, _axes(a, axes)),
    "Squeeze": lambda a, x, axes=None: np.squeeze(x, _axes(a, axes) if ("axes" in a or axes is not None) else None),
    "Concat": lambda a, *xs: np.concatenate(xs, axis=a["axis"]),
    "Gather": lambda a, x, i: np.take(x, i, axis=a.get("axis", 0)),
    "Shape": lambda a, x: np.array(x.shape, dtype=np.int64),
    "Add": lambda a, x, y: x + y, "Sub": lambda a, x, y: x - y,
    "Mul": lambda a, x, y: x * y, "Div": lambda a, x, y: x / y,
}
_ACTIVATION_OPS["Shape"] = _shape_of_activation


# ---- writer ------------------------------------------------------------------------------------

def to_onnx(network: Network) -> onnx.ModelProto:
    """A checked ONNX model (opset 17, dynamic batch) computing the network and its output transform."""
    nodes, inits = [], []
    names = []  # the ONNX name of each layer's output
    for index, (layer, sources) in enumerate(zip(network.layers, network.inputs)):
        reads = [network.input_name if j == INPUT else names[j] for j in sources]
        names.append(_write_layer(layer, index, reads, nodes, inits))
    if network.output_transform is not None:
        op = {"sigmoid": "Sigmoid", "softmax": "Softmax"}[network.output_transform]
        attrs = {"axis": -1} if op == "Softmax" else {}
        nodes.append(helper.make_node(op, [names[-1]], ["transform_out"], name=op.lower(), **attrs))
    nodes[-1].output[0] = network.output_name
    batch_input = helper.make_tensor_value_info(
        network.input_name, onnx.TensorProto.FLOAT, ["batch", *network.input_shape])
    output = helper.make_tensor_value_info(
        network.output_name, onnx.TensorProto.FLOAT, ["batch", *network.output_shape])
    graph = helper.make_graph(nodes, "certprune", [batch_input], [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", WRITE_OPSET)],
                              producer_name="certprune")
    model.ir_version = 8
    for key, value in network.metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


def save_onnx(network: Network, path: str | Path) -> None:
    Path(path).absolute().parent.mkdir(parents=True, exist_ok=True)
    onnx.save(to_onnx(network), str(path))


def _write_layer(layer: Layer, index: int, reads: list[str], nodes: list, inits: list) -> str:
    """Append the ONNX nodes of one layer reading ``reads``; returns the name of its output."""
    name = f"{layer.kind}_{index}"
    out = f"{name}_out"

    def init(suffix: str, tensor) -> str:
        array = tensor if isinstance(tensor, np.ndarray) else tensor.detach().to(torch.float32).numpy()
        inits.append(numpy_helper.from_array(array, f"{name}_{suffix}"))
        return f"{name}_{suffix}"

    def node(op: str, inputs: list[str], **attrs) -> None:
        nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))

    if isinstance(layer, Dense):
        node("Gemm", [reads[0], init("W", layer.weight), init("b", layer.bias)], transB=1)
    elif isinstance(layer, Conv2d):
        node("Conv", [reads[0], init("W", layer.weight), init("b", layer.bias)],
             kernel_shape=list(layer.weight.shape[2:]), strides=list(layer.stride), pads=list(layer.padding) * 2,
             dilations=list(layer.dilation), group=layer.groups)
    elif isinstance(layer, ReLU):
        node("Relu", reads)
    elif isinstance(layer, Flatten):
        node("Flatten", reads, axis=1)
    elif isinstance(layer, Affine):
        nodes.append(helper.make_node("Mul", [reads[0], init("scale", layer.scale)], [f"{name}_mul"],
                                      name=f"{name}_mul"))
        node("Add", [f"{name}_mul", init("shift", layer.shift)])
    elif isinstance(layer, Add):
        node("Add", reads)
    elif isinstance(layer, Concat):
        node("Concat", reads, axis=layer.axis + 1)
    elif isinstance(layer, Reshape):
        node("Reshape", [reads[0], init("shape", np.array((-1, *layer.shape), dtype=np.int64))])
    elif isinstance(layer, Transpose):
        node("Transpose", reads, perm=[0, *(p + 1 for p in layer.perm)])
    elif isinstance(layer, Pad):
        pads = np.array((0, *layer.before, 0, *layer.after), dtype=np.int64)
        node("Pad", [reads[0], init("pads", pads)])
    elif isinstance(layer, MaxPool2d):
        node("MaxPool", reads, kernel_shape=list(layer.kernel), strides=list(layer.stride),
             pads=list(layer.padding) * 2)
    else:
        raise UnsupportedLayerError(f"cannot write layer kind {type(layer).__name__} to ONNX")
    return out


def weights_from_file(onnx_path, network) -> bool:
    """Whether every weight, bias, scale and shift of the loaded ``network`` is a float32 constant of the ONNX
    file bit for bit (a matrix possibly transposed): then the network is the file's real-valued network."""
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
