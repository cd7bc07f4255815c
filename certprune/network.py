"""The network representation every module shares: an immutable chain of layer records."""
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
    """2-D convolution, groups = 1, symmetric zero padding; ``weight`` is (out, in, kh, kw)."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    kind = "conv2d"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3 or input_shape[0] != self.weight.shape[1]:
            raise ModelError(f"conv layer expects ({self.weight.shape[1]}, H, W) input, got {input_shape}")
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


Layer = Union[Dense, Conv2d, ReLU, Flatten, Affine]
LAYER_KINDS = (Dense, Conv2d, ReLU, Flatten, Affine)
OUTPUT_TRANSFORMS = (None, "sigmoid", "softmax")


@dataclass(frozen=True, eq=False)
class Network:
    """A feed-forward ReLU network: layers in order, the per-sample input shape, and metadata.

    ``forward`` returns logits; ``output_transform`` (sigmoid or softmax) is recorded, not applied,
    because decisions are taken on the logits before it.
    """

    layers: tuple[Layer, ...]
    input_shape: Shape
    output_transform: str | None = None
    input_name: str = "input"
    output_name: str = "output"
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        if self.output_transform not in OUTPUT_TRANSFORMS:
            raise ModelError(f"unknown output transform {self.output_transform!r}")
        for layer in self.layers:
            if not isinstance(layer, LAYER_KINDS):
                raise UnsupportedLayerError(f"unsupported layer kind {type(layer).__name__}")
        self.shapes()  # checks that consecutive layers fit

    def shapes(self) -> list[Shape]:
        """Per-sample shapes: the input, then the output of every layer."""
        shapes = [self.input_shape]
        for layer in self.layers:
            shapes.append(layer.output_shape(shapes[-1]))
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
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected input (B, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        for layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def relu_sizes(self) -> list[int]:
        """Number of neurons behind each ReLU layer, in order."""
        shapes = self.shapes()
        return [math.prod(shapes[i]) for i, layer in enumerate(self.layers) if isinstance(layer, ReLU)]

    @property
    def relu_count(self) -> int:
        return sum(self.relu_sizes())

    @property
    def parameter_count(self) -> int:
        return sum(layer.parameters() for layer in self.layers)

    def to(self, dtype: torch.dtype) -> "Network":
        return replace(self, layers=tuple(layer.to(dtype) for layer in self.layers))

    def with_layers(self, layers: Sequence[Layer]) -> "Network":
        return replace(self, layers=tuple(layers))


def apply_output_transform(network: Network, logits: torch.Tensor) -> torch.Tensor:
    """The model's outputs as the ONNX file computes them (logits through any final sigmoid/softmax)."""
    if network.output_transform == "sigmoid":
        return torch.sigmoid(logits)
    if network.output_transform == "softmax":
        return torch.softmax(logits, dim=-1)
    return logits
