"""The network representation every module shares: an immutable graph of layer records.

A Network lists its layers in topological order; ``inputs[i]`` names the values layer ``i`` reads: ``INPUT``
(-1) is the network input, ``j >= 0`` the output of layer ``j < i``. The output of the last layer is the
network's output. A chain is the graph whose layer ``i`` reads layer ``i - 1`` (the default wiring), so the
engines have one code path: they walk the layers in order and look up each layer's inputs by index.
Value ``k`` of ``shapes()`` is the network input for ``k = 0`` and the output of layer ``k - 1`` otherwise,
so the shape of what layer ``i`` reads from ``j`` is ``shapes()[j + 1]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping, Sequence, Union

import torch
import torch.nn.functional as F

from certprune.errors import ModelError, UnsupportedLayerError

Shape = tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Dense:
    """y = W x + b on a flat per-sample vector; ``weight`` is (out, in)."""

    weight: torch.Tensor
    bias: torch.Tensor
    kind = "dense"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def output_shape(self, input_shape: Shape) -> Shape:
        if input_shape != (self.weight.shape[1],):
            raise ModelError(f"dense layer expects input ({self.weight.shape[1]},), got {input_shape}")
        return (self.weight.shape[0],)

    def parameters(self) -> int:
        return self.weight.numel() + self.bias.numel()

    def to(self, dtype: torch.dtype) -> "Dense":
        return Dense(self.weight.to(dtype), self.bias.to(dtype))


@dataclass(frozen=True, eq=False)
class Conv2d:
    """2-D convolution with symmetric zero padding; ``weight`` is (out, in / groups, kh, kw).

    Asymmetric padding is a Pad layer before it; AveragePool is a depthwise Conv2d (groups = channels).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    kind = "conv2d"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def output_shape(self, input_shape: Shape) -> Shape:
        channels = self.weight.shape[1] * self.groups
        if len(input_shape) != 3 or input_shape[0] != channels:
            raise ModelError(f"conv layer expects ({channels}, H, W) input, got {input_shape}")
        dims = []
        for i in range(2):
            k = self.dilation[i] * (self.weight.shape[2 + i] - 1) + 1
            dims.append((input_shape[1 + i] + 2 * self.padding[i] - k) // self.stride[i] + 1)
        return (self.weight.shape[0], dims[0], dims[1])

    def parameters(self) -> int:
        return self.weight.numel() + self.bias.numel()

    def to(self, dtype: torch.dtype) -> "Conv2d":
        return replace(self, weight=self.weight.to(dtype), bias=self.bias.to(dtype))


@dataclass(frozen=True, eq=False)
class ReLU:
    """max(x, 0), elementwise."""

    kind = "relu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def parameters(self) -> int:
        return 0

    def to(self, dtype: torch.dtype) -> "ReLU":
        return self


@dataclass(frozen=True, eq=False)
class Flatten:
    """Per-sample tensor to a flat vector (row-major, as ONNX Flatten with axis 1)."""

    kind = "flatten"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(start_dim=1)

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def parameters(self) -> int:
        return 0

    def to(self, dtype: torch.dtype) -> "Flatten":
        return self


@dataclass(frozen=True, eq=False)
class Affine:
    """y = scale * x + shift elementwise; both tensors have the per-sample shape.

    What remains of input normalisation or BatchNorm that cannot be folded exactly into a neighbour
    (for example a per-pixel shift before a padded convolution).
    """

    scale: torch.Tensor
    shift: torch.Tensor
    kind = "affine"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def output_shape(self, input_shape: Shape) -> Shape:
        if tuple(self.scale.shape) != input_shape:
            raise ModelError(f"affine layer expects input {tuple(self.scale.shape)}, got {input_shape}")
        return input_shape

    def parameters(self) -> int:
        return self.scale.numel() + self.shift.numel()

    def to(self, dtype: torch.dtype) -> "Affine":
        return Affine(self.scale.to(dtype), self.shift.to(dtype))


@dataclass(frozen=True, eq=False)
class _Structural:
    """A parameter-free layer: nothing to convert or count."""

    def parameters(self) -> int:
        return 0

    def to(self, dtype: torch.dtype):
        return self


@dataclass(frozen=True, eq=False)
class Add(_Structural):
    """The sum of two activations of the same shape (a residual join)."""

    kind = "add"
    arity = 2

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def output_shape(self, a: Shape, b: Shape) -> Shape:
        if a != b:
            raise ModelError(f"add joins activations of different shapes {a} and {b}")
        return a


@dataclass(frozen=True, eq=False)
class Concat(_Structural):
    """Activations joined along per-sample ``axis`` (0 is the first dimension after the batch)."""

    axis: int = 0
    kind = "concat"
    arity = None  # any number of inputs, at least one

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis + 1)

    def output_shape(self, *shapes: Shape) -> Shape:
        first = shapes[0]
        if not 0 <= self.axis < len(first) or any(
                len(s) != len(first) or s[:self.axis] + s[self.axis + 1:] != first[:self.axis] + first[self.axis + 1:]
                for s in shapes):
            raise ModelError(f"concat along axis {self.axis} of shapes {list(shapes)}")
        return first[:self.axis] + (sum(s[self.axis] for s in shapes),) + first[self.axis + 1:]


@dataclass(frozen=True, eq=False)
class Reshape(_Structural):
    """The per-sample tensor read in row-major order into ``shape`` (Flatten is the flat case)."""

    shape: Shape
    kind = "reshape"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def output_shape(self, input_shape: Shape) -> Shape:
        if math.prod(input_shape) != math.prod(self.shape):
            raise ModelError(f"cannot reshape {input_shape} to {self.shape}")
        return tuple(self.shape)


@dataclass(frozen=True, eq=False)
class Transpose(_Structural):
    """The per-sample dimensions permuted: output dimension ``d`` is input dimension ``perm[d]``."""

    perm: Shape
    kind = "transpose"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, *(p + 1 for p in self.perm))

    def output_shape(self, input_shape: Shape) -> Shape:
        if sorted(self.perm) != list(range(len(input_shape))):
            raise ModelError(f"transpose {self.perm} of a tensor of shape {input_shape}")
        return tuple(input_shape[p] for p in self.perm)


@dataclass(frozen=True, eq=False)
class Pad(_Structural):
    """Zero padding of the per-sample tensor: ``before[d]`` and ``after[d]`` values at dimension ``d``."""

    before: Shape
    after: Shape
    kind = "pad"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        widths = []
        for b, a in zip(reversed(self.before), reversed(self.after)):
            widths += [b, a]
        return F.pad(x, widths)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(self.before) != len(input_shape) or len(self.after) != len(input_shape) or min(
                (*self.before, *self.after), default=0) < 0:
            raise ModelError(f"pad {self.before}/{self.after} of a tensor of shape {input_shape}")
        return tuple(d + b + a for d, b, a in zip(input_shape, self.before, self.after))


@dataclass(frozen=True, eq=False)
class MaxPool2d(_Structural):
    """Maximum over each ``kernel`` window of every channel (stride, symmetric padding by -inf)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    kind = "maxpool"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel, self.stride, self.padding)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3 or any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            raise ModelError(f"max pool {self.kernel} (padding {self.padding}) of a tensor of shape {input_shape}")
        dims = [(input_shape[1 + i] + 2 * self.padding[i] - self.kernel[i]) // self.stride[i] + 1 for i in range(2)]
        if min(dims) < 1:
            raise ModelError(f"max pool {self.kernel} larger than its input {input_shape}")
        return (input_shape[0], dims[0], dims[1])


Layer = Union[Dense, Conv2d, ReLU, Flatten, Affine, Add, Concat, Reshape, Transpose, Pad, MaxPool2d]
LAYER_KINDS = (Dense, Conv2d, ReLU, Flatten, Affine, Add, Concat, Reshape, Transpose, Pad, MaxPool2d)
INPUT = -1  # the index by which a layer reads the network input
MOVES = ("flatten", "reshape", "transpose", "pad", "concat")  # kinds that only move values (and pad zeros)


def gather_index(layer: Layer, *input_shapes: Shape):
    """For a layer of a kind in MOVES: per flat output entry, the index into its inputs' flat entries
    concatenated (numpy int64), or -1 for a padded zero. Exact encodings use it to pick expressions."""
    offsets = [0]
    for shape in input_shapes:
        offsets.append(offsets[-1] + math.prod(shape))
    numbered = [(torch.arange(math.prod(shape), dtype=torch.float64) + start + 1).reshape(1, *shape)
                for shape, start in zip(input_shapes, offsets)]
    return (layer.forward(*numbered)[0].flatten().long() - 1).numpy()


def pool_windows(layer: "MaxPool2d", shape: Shape):
    """(N_out, K) numpy int64: per flat output entry of a max pool, the flat input indices of its window
    (-1 where the window covers padding)."""
    numbered = (torch.arange(math.prod(shape), dtype=torch.float64) + 1).reshape(shape[0], 1, *shape[1:])
    padded = F.pad(numbered, (layer.padding[1],) * 2 + (layer.padding[0],) * 2)
    columns = F.unfold(padded, layer.kernel, stride=layer.stride)  # (C, K, L)
    return (columns.transpose(1, 2).reshape(-1, columns.shape[1]).long() - 1).numpy()
OUTPUT_TRANSFORMS = (None, "sigmoid", "softmax")


Wiring = tuple[tuple[int, ...], ...]


def chain_wiring(count: int) -> Wiring:
    """The wiring of a chain: layer ``i`` reads layer ``i - 1`` (layer 0 the input)."""
    return tuple((i - 1,) for i in range(count))


@dataclass(frozen=True, eq=False)
class Network:
    """A feed-forward ReLU network: layers in topological order, their wiring, the per-sample input shape,
    and metadata.

    ``inputs[i]`` lists the values layer ``i`` reads (``INPUT`` or an earlier layer's index); None means a
    chain. Every layer but the last feeds some later layer. ``forward`` returns logits; ``output_transform``
    (sigmoid or softmax) is recorded, not applied, because decisions are taken on the logits before it.
    """

    layers: tuple[Layer, ...]
    input_shape: Shape
    output_transform: str | None = None
    input_name: str = "input"
    output_name: str = "output"
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    inputs: Wiring | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        wiring = chain_wiring(len(self.layers)) if self.inputs is None else tuple(
            tuple(int(j) for j in sources) for sources in self.inputs)
        object.__setattr__(self, "inputs", wiring)
        if self.output_transform not in OUTPUT_TRANSFORMS:
            raise ModelError(f"unknown output transform {self.output_transform!r}")
        if not self.layers:
            raise ModelError("a network needs at least one layer")
        for layer in self.layers:
            if not isinstance(layer, LAYER_KINDS):
                raise UnsupportedLayerError(f"unsupported layer kind {type(layer).__name__}")
        self._check_wiring()
        self.shapes()  # checks that every layer fits what it reads

    def __reduce__(self):
        """Pickled by its fields (its metadata as a plain dict): a pruning checkpoint holds networks."""
        return (Network, (self.layers, self.input_shape, self.output_transform, self.input_name, self.output_name,
                          dict(self.metadata), self.inputs))

    def _check_wiring(self) -> None:
        if len(self.inputs) != len(self.layers):
            raise ModelError(f"wiring lists {len(self.inputs)} layers, the network has {len(self.layers)}")
        used = set()
        for i, (layer, sources) in enumerate(zip(self.layers, self.inputs)):
            arity = getattr(layer, "arity", 1)
            if not sources or (arity is not None and len(sources) != arity):
                raise ModelError(f"layer {i} ({layer.kind}) reads {len(sources)} values, expected {arity or 'some'}")
            if any(not INPUT <= j < i for j in sources):
                raise ModelError(f"layer {i} ({layer.kind}) reads {list(sources)}: not an earlier layer or the input")
            used.update(sources)
        unused = [i for i in range(len(self.layers) - 1) if i not in used]
        if unused:
            raise ModelError(f"the output of layer {unused[0]} ({self.layers[unused[0]].kind}) is never used")

    @property
    def is_chain(self) -> bool:
        return self.inputs == chain_wiring(len(self.layers))

    def consumers(self, index: int) -> list[int]:
        """The layers that read value ``index`` (a layer's output, or INPUT)."""
        return [i for i, sources in enumerate(self.inputs) if index in sources]

    def shapes(self) -> list[Shape]:
        """Per-sample shapes of every value: the input, then the output of every layer."""
        shapes = [self.input_shape]
        for layer, sources in zip(self.layers, self.inputs):
            shapes.append(layer.output_shape(*(shapes[j + 1] for j in sources)))
        return shapes

    @property
    def output_shape(self) -> Shape:
        return self.shapes()[-1]

    @property
    def dtype(self) -> torch.dtype:
        for layer in self.layers:
            if isinstance(layer, (Dense, Conv2d)):
                return layer.weight.dtype
        return torch.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch ``x`` of shape ``(B, *input_shape)``."""
        return self.trace(x)[-1]

    def trace(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every layer, in order, for a batch ``x`` of shape ``(B, *input_shape)``."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected input (B, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        values = [x]
        for layer, sources in zip(self.layers, self.inputs):
            values.append(layer.forward(*(values[j + 1] for j in sources)))
        return values[1:]

    __call__ = forward

    def relu_positions(self) -> list[int]:
        """Indices of the ReLU layers, in order."""
        return [i for i, layer in enumerate(self.layers) if isinstance(layer, ReLU)]

    def relu_shapes(self) -> list[Shape]:
        """Per-sample shape behind each ReLU layer, in order."""
        shapes = self.shapes()
        return [shapes[i + 1] for i in self.relu_positions()]

    def relu_sizes(self) -> list[int]:
        """Number of neurons behind each ReLU layer, in order."""
        return [math.prod(shape) for shape in self.relu_shapes()]

    @property
    def relu_count(self) -> int:
        return sum(self.relu_sizes())

    @property
    def parameter_count(self) -> int:
        return sum(layer.parameters() for layer in self.layers)

    def to(self, dtype: torch.dtype) -> "Network":
        return replace(self, layers=tuple(layer.to(dtype) for layer in self.layers))

    def with_layers(self, layers: Sequence[Layer]) -> "Network":
        """The same wiring with other layer records (surgery that changes sizes, not structure)."""
        return replace(self, layers=tuple(layers))

    def insert_after(self, index: int, layer: Layer) -> "Network":
        """A new single-input ``layer`` reading the output of layer ``index``; its former readers read it."""
        layers = list(self.layers)
        layers.insert(index + 1, layer)
        shift = lambda j: j + 1 if j > index else j  # noqa: E731 (indices after the new layer move by one)
        wiring = [tuple(shift(j) for j in sources) for sources in self.inputs]
        wiring = [tuple(index + 1 if j == index else j for j in sources) for sources in wiring]
        wiring.insert(index + 1, (index,))
        return replace(self, layers=tuple(layers), inputs=tuple(wiring))

    def remove_layer(self, index: int) -> "Network":
        """Without the single-input layer ``index``: its readers read what it read."""
        (source,) = self.inputs[index]
        layers = list(self.layers)
        del layers[index]
        wiring = [tuple(source if j == index else j - 1 if j > index else j for j in sources)
                  for k, sources in enumerate(self.inputs) if k != index]
        return replace(self, layers=tuple(layers), inputs=tuple(wiring))


def apply_output_transform(network: Network, logits: torch.Tensor) -> torch.Tensor:
    """The model's outputs as the ONNX file computes them (logits through any final sigmoid/softmax)."""
    if network.output_transform == "sigmoid":
        return torch.sigmoid(logits)
    if network.output_transform == "softmax":
        return torch.softmax(logits, dim=-1)
    return logits
