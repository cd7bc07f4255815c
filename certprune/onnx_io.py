"""ONNX -> Network and back. The reader is ours: it walks the graph as a chain of operators."""
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
from certprune.network import Affine, Conv2d, Dense, Flatten, Layer, Network, ReLU

WRITE_OPSET = 17
PASS_THROUGH = {"Identity", "Dropout"}


class _Activation:
    """Marker for the one tensor that flows through the chain (as opposed to constants)."""

    def __init__(self, version: int) -> None:
        self.version = version


@dataclass
class _Chain:
    """Reader state: layers so far, the current per-sample shape, and the final transform."""

    shape: tuple[int, ...]
    fixed_batch: int | None
    layers: list[Layer] = field(default_factory=list)
    version: int = 0
    transform: str | None = None

    def append(self, layer: Layer) -> _Activation:
        self.shape = layer.output_shape(self.shape)
        self.layers.append(layer)
        self.version += 1
        return _Activation(self.version)


def load_onnx(path: str | Path, deadline: Deadline | None = None) -> Network:
    """Read an ONNX ReLU network into a Network (float32), folding normalisation and BatchNorm.

    With a ``deadline``, raises ``DeadlineExpired`` once it passes (checked after reading and per node).
    """
    deadline = deadline or Deadline.never()
    model = _read_model(Path(path))
    deadline.check(f"loading {path}")
    graph = model.graph
    constants = _initializers(graph)
    graph_input = _single_input(graph, constants)
    batch, shape = _input_shape(graph_input)
    chain = _Chain(shape=shape, fixed_batch=batch)
    env: dict[str, object] = dict(constants)
    env[graph_input.name] = _Activation(0)
    for position, node in enumerate(graph.node):
        _apply(node, position, env, chain)
        deadline.check(f"loading {path}")
    if len(graph.output) != 1:
        raise ModelError(f"model has {len(graph.output)} outputs; certprune supports one")
    result = env.get(graph.output[0].name)
    if not isinstance(result, _Activation) or result.version != chain.version:
        raise ModelError(f"graph output '{graph.output[0].name}' is not the end of the network chain")
    layers = tuple(layer.to(torch.float32) for layer in fold_affine(chain.layers))
    metadata = {p.key: p.value for p in model.metadata_props}
    return Network(layers, shape, chain.transform, graph_input.name, graph.output[0].name, metadata)


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


def _input_shape(value: onnx.ValueInfoProto) -> tuple[int | None, tuple[int, ...]]:
    """(fixed batch size or None for a symbolic one, per-sample shape)."""
    dims = value.type.tensor_type.shape.dim
    if len(dims) < 2:
        raise ModelError(f"input '{value.name}' has rank {len(dims)}; expected a batch dimension and features")
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
    shape = []
    for dim in dims[1:]:
        if not dim.HasField("dim_value"):
            raise ModelError(f"input '{value.name}' has a symbolic non-batch dimension '{dim.dim_param}'")
        shape.append(dim.dim_value)
    return batch, tuple(shape)


def _apply(node: onnx.NodeProto, position: int, env: dict, chain: _Chain) -> None:
    where = f"node '{node.name or node.output[0]}' at position {position}"
    if node.domain not in ("", "ai.onnx"):
        raise UnsupportedLayerError(f"unsupported operator {node.domain}.{node.op_type} ({where}); only the "
                                    "standard ONNX domain is read")
    inputs = [env.get(name) if name else None for name in node.input]
    for name, value in zip(node.input, inputs):
        if name and value is None:
            raise ModelError(f"{where} reads '{name}', which nothing defines")
    acts = [v for v in inputs if isinstance(v, _Activation)]
    if not acts:
        outputs = _constant_op(node, inputs, where)
    else:
        if any(a.version != chain.version for a in acts) or len(acts) > 1:
            raise UnsupportedLayerError(
                f"unsupported graph shape: {node.op_type} ({where}) joins two branches (residual connections are not supported)")
        if chain.transform is not None:
            raise UnsupportedLayerError(
                f"unsupported operator {node.op_type} after the final {chain.transform} ({where})")
        outputs = [_activation_op(node, inputs, chain, where)]
    for name, value in zip(node.output, outputs):
        env[name] = value


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


# ---- operators on the flowing activation -------------------------------------------------------

def _activation_op(node, inputs, chain: _Chain, where: str) -> _Activation:
    op = node.op_type
    handler = _ACTIVATION_OPS.get(op)
    if handler is None:
        raise UnsupportedLayerError(f"unsupported operator {op} ({where}); supported on activations: "
                                    f"{', '.join(sorted(_ACTIVATION_OPS))}")
    return handler(node, inputs, chain, where)


def _pass(node, inputs, chain, where):
    return _Activation(chain.version)


def _relu(node, inputs, chain, where):
    return chain.append(ReLU())


def _transform(node, inputs, chain, where):
    if node.op_type == "Softmax":
        # On a flat per-sample vector the default axis of every opset (1 before 13, -1 after) is the last.
        axis = _attrs(node).get("axis", -1)
        if axis not in (-1, 1) or len(chain.shape) != 1:
            raise UnsupportedLayerError(f"Softmax over axis {axis} of a {len(chain.shape) + 1}-D tensor ({where})")
    chain.transform = node.op_type.lower()
    return _Activation(chain.version)


def _flatten(node, inputs, chain, where):
    axis = _attrs(node).get("axis", 1)
    if axis != 1:
        raise UnsupportedLayerError(f"Flatten with axis {axis} ({where}); only axis 1 keeps the batch")
    return chain.append(Flatten()) if len(chain.shape) > 1 else _Activation(chain.version)


def _reshape(node, inputs, chain, where):
    target = [int(d) for d in np.asarray(inputs[1]).ravel()]
    if not target or target[0] not in (-1, 0, chain.fixed_batch or -1):
        raise UnsupportedLayerError(f"Reshape to {target} changes the batch dimension ({where})")
    size = math.prod(chain.shape)
    rest = [chain.shape[i] if d == 0 and i < len(chain.shape) else d for i, d in enumerate(target[1:])]
    if rest.count(-1) == 1:
        known = math.prod(d for d in rest if d != -1)
        rest = [size // known if d == -1 else d for d in rest]
    rest = tuple(rest)
    if target[0] == -1 and -1 not in target[1:] and math.prod(rest) != size:
        raise UnsupportedLayerError(f"Reshape to {target} regroups the batch ({where})")
    if rest == chain.shape:
        return _Activation(chain.version)
    if rest == (size,):
        return chain.append(Flatten())
    raise UnsupportedLayerError(f"Reshape from {chain.shape} to {rest} ({where}); only flattening is supported")


def _gemm(node, inputs, chain, where):
    a = _attrs(node)
    if not isinstance(inputs[0], _Activation) or a.get("transA", 0):
        raise UnsupportedLayerError(f"Gemm with the activation as B or transposed ({where})")
    b = _constant(inputs[1], "B", where).astype(np.float64)
    weight = b if a.get("transB", 0) else b.T
    weight = a.get("alpha", 1.0) * weight
    bias = np.zeros(weight.shape[0])
    if len(inputs) > 2 and inputs[2] is not None:
        c = _constant(inputs[2], "C", where).astype(np.float64)
        bias = a.get("beta", 1.0) * np.broadcast_to(c.reshape(-1) if c.size == weight.shape[0] else c,
                                                     (weight.shape[0],))
    return _dense(weight, bias, chain, where)


def _matmul(node, inputs, chain, where):
    if not isinstance(inputs[0], _Activation):
        raise UnsupportedLayerError(f"MatMul with a constant on the left ({where})")
    b = _constant(inputs[1], "B", where).astype(np.float64)
    if b.ndim != 2:
        raise UnsupportedLayerError(f"MatMul with a {b.ndim}-D weight ({where})")
    return _dense(b.T, np.zeros(b.shape[1]), chain, where)


def _dense(weight: np.ndarray, bias: np.ndarray, chain: _Chain, where: str) -> _Activation:
    if len(chain.shape) != 1 or chain.shape[0] != weight.shape[1]:
        raise UnsupportedLayerError(
            f"dense layer with {weight.shape[1]} inputs applied to a tensor of shape {chain.shape} ({where})")
    return chain.append(Dense(torch.tensor(weight), torch.tensor(np.array(bias, dtype=np.float64))))


def _elementwise(node, inputs, chain, where):
    """Add/Sub/Mul/Div of the activation and a constant: an Affine layer, folded later."""
    op = node.op_type
    act_first = isinstance(inputs[0], _Activation)
    const = _broadcast_constant(inputs[1] if act_first else inputs[0], chain, where)
    ones, zeros = np.ones(chain.shape), np.zeros(chain.shape)
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
    return chain.append(Affine(torch.tensor(scale), torch.tensor(shift)))


def _broadcast_constant(value, chain: _Chain, where: str) -> np.ndarray:
    const = _constant(value, "operand", where).astype(np.float64)
    full = (chain.fixed_batch or 1,) + chain.shape
    try:
        if np.broadcast_shapes(full, const.shape) != full:
            raise ValueError
    except ValueError:
        raise UnsupportedLayerError(
            f"constant of shape {const.shape} does not broadcast over the activation {chain.shape} ({where})") from None
    return np.broadcast_to(const, full)[0].copy()


def _conv(node, inputs, chain, where):
    a = _attrs(node)
    weight = _constant(inputs[1], "weight", where).astype(np.float64)
    if weight.ndim != 4 or len(chain.shape) != 3:
        raise UnsupportedLayerError(f"Conv that is not 2-D ({where})")
    if a.get("group", 1) != 1:
        raise UnsupportedLayerError(f"Conv with group={a['group']} ({where}); only group=1 is supported")
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        raise UnsupportedLayerError(f"Conv with auto_pad={auto_pad} ({where})")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise UnsupportedLayerError(f"Conv with asymmetric pads {pads} ({where})")
    bias = (_constant(inputs[2], "bias", where).astype(np.float64) if len(inputs) > 2 and inputs[2] is not None
            else np.zeros(weight.shape[0]))
    layer = Conv2d(torch.tensor(weight), torch.tensor(bias), tuple(a.get("strides", [1, 1])),
                   tuple(pads[:2]), tuple(a.get("dilations", [1, 1])))
    return chain.append(layer)


def _batchnorm(node, inputs, chain, where):
    scale, bias, mean, var = (_constant(v, "parameter", where).astype(np.float64) for v in inputs[1:5])
    eps = _attrs(node).get("epsilon", 1e-5)
    factor = scale / np.sqrt(var + eps)
    offset = bias - mean * factor
    channel_shape = (-1,) + (1,) * (len(chain.shape) - 1)
    full_scale = np.broadcast_to(factor.reshape(channel_shape), chain.shape).copy()
    full_shift = np.broadcast_to(offset.reshape(channel_shape), chain.shape).copy()
    return chain.append(Affine(torch.tensor(full_scale), torch.tensor(full_shift)))


def _cast(node, inputs, chain, where):
    if _attrs(node).get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        raise UnsupportedLayerError(f"Cast of the activation to a non-float type ({where})")
    return _Activation(chain.version)


_ACTIVATION_OPS = {
    "Relu": _relu, "Sigmoid": _transform, "Softmax": _transform, "Flatten": _flatten, "Reshape": _reshape,
    "Gemm": _gemm, "MatMul": _matmul, "Add": _elementwise, "Sub": _elementwise, "Mul": _elementwise,
    "Div": _elementwise, "Conv": _conv, "BatchNormalization": _batchnorm, "Identity": _pass,
    "Dropout": _pass, "Cast": _cast,
}


# ---- operators on constants (shape plumbing, Constant nodes) ------------------------------------

def _constant(value, role: str, where: str) -> np.ndarray:
    if isinstance(value, _Activation) or value is None:
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


def _shape_of_activation(node, inputs, chain, where):
    """Shape(x) of the activation: the batch becomes -1 so that a later Reshape keeps it."""
    return np.array((-1,) + chain.shape, dtype=np.int64)


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
    current = network.input_name
    for index, layer in enumerate(network.layers):
        current = _write_layer(layer, index, current, nodes, inits)
    if network.output_transform is not None:
        op = {"sigmoid": "Sigmoid", "softmax": "Softmax"}[network.output_transform]
        attrs = {"axis": -1} if op == "Softmax" else {}
        nodes.append(helper.make_node(op, [current], ["transform_out"], name=op.lower(), **attrs))
        current = "transform_out"
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
    onnx.save(to_onnx(network), str(path))


def _write_layer(layer: Layer, index: int, current: str, nodes: list, inits: list) -> str:
    name = f"{layer.kind}_{index}"
    out = f"{name}_out"

    def init(suffix: str, tensor: torch.Tensor) -> str:
        inits.append(numpy_helper.from_array(tensor.detach().to(torch.float32).numpy(), f"{name}_{suffix}"))
        return f"{name}_{suffix}"

    if isinstance(layer, Dense):
        nodes.append(helper.make_node("Gemm", [current, init("W", layer.weight), init("b", layer.bias)], [out],
                                      name=name, transB=1))
    elif isinstance(layer, Conv2d):
        pads = list(layer.padding) * 2
        nodes.append(helper.make_node(
            "Conv", [current, init("W", layer.weight), init("b", layer.bias)], [out], name=name,
            kernel_shape=list(layer.weight.shape[2:]), strides=list(layer.stride), pads=pads,
            dilations=list(layer.dilation)))
    elif isinstance(layer, ReLU):
        nodes.append(helper.make_node("Relu", [current], [out], name=name))
    elif isinstance(layer, Flatten):
        nodes.append(helper.make_node("Flatten", [current], [out], name=name, axis=1))
    elif isinstance(layer, Affine):
        nodes.append(helper.make_node("Mul", [current, init("scale", layer.scale)], [f"{name}_mul"], name=f"{name}_mul"))
        nodes.append(helper.make_node("Add", [f"{name}_mul", init("shift", layer.shift)], [out], name=name))
    else:
        raise UnsupportedLayerError(f"cannot write layer kind {type(layer).__name__} to ONNX")
    return out
