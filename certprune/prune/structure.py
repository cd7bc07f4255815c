"""Which units a network can lose: hidden neurons and conv channels between a ReLU and the next linear layer."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from certprune.network import Affine, Conv2d, Dense, Flatten, Network, ReLU

LINEAR = (Dense, Conv2d)


@dataclass(frozen=True)
class PrunableLayer:
    """The units computed by ``network.layers[producer]`` and read by ``network.layers[consumer]``.

    A unit is a row of a Dense layer or an output channel of a Conv2d. Between producer and consumer lie
    only elementwise layers (ReLU, Affine) and Flatten, with at least one ReLU; ``relu`` is the first.
    ``relu_ordinal`` is that ReLU's position among the network's ReLU layers (the index of its bounds).
    ``unit_shape`` is the producer's per-sample output shape: ``(N,)`` or ``(C, H, W)``; unit ``k`` owns
    ``tensor.reshape(size, -1)[k]`` of every per-sample tensor between producer and consumer.
    ``relu_shape`` is the per-sample shape of the ReLU's output (flat when a Flatten precedes it).
    """

    producer: int
    relu: int
    relu_ordinal: int
    consumer: int
    unit_shape: tuple[int, ...]
    relu_shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return self.unit_shape[0]

    @property
    def positions(self) -> int:
        """Values per unit: 1 for a neuron, H * W for a channel."""
        out = 1
        for d in self.unit_shape[1:]:
            out *= d
        return out


def prunable_layers(network: Network) -> tuple[PrunableLayer, ...]:
    """Every hidden linear layer followed by a ReLU before the next linear layer; never the output layer.

    In a graph the producer, the layers after it and the consumer must form a path of consecutive layers
    in which each value has one reader (units whose outputs fan out or join another branch, such as the
    channels of a residual stream, are not prunable one by one). Grouped convolutions are not pruned.
    """
    shapes = network.shapes()
    relu_positions = network.relu_positions()
    result = []
    for producer, layer in enumerate(network.layers):
        if not _ungrouped_linear(layer):
            continue
        index, relu = producer, None
        while network.consumers(index) == [index + 1] and network.inputs[index + 1] == (index,):
            index += 1
            after = network.layers[index]
            if isinstance(after, LINEAR):
                if relu is not None and _ungrouped_linear(after):
                    result.append(PrunableLayer(producer, relu, relu_positions.index(relu), index,
                                                shapes[producer + 1], shapes[relu + 1]))
                break
            if isinstance(after, ReLU) and relu is None:
                relu = index
            elif not isinstance(after, (ReLU, Affine, Flatten)):
                break
    return tuple(result)


def _ungrouped_linear(layer) -> bool:
    return isinstance(layer, Dense) or (isinstance(layer, Conv2d) and layer.groups == 1)


def per_unit(tensor: torch.Tensor, layer: PrunableLayer) -> torch.Tensor:
    """A batch ``(B, ...)`` of per-sample tensors between producer and consumer as ``(B, units, positions)``."""
    return tensor.reshape(tensor.shape[0], layer.size, -1)


def keep_units(tensor: torch.Tensor, keep: torch.Tensor, size: int) -> torch.Tensor:
    """The entries of a per-sample tensor (unit-major, any shape) that belong to the kept units.

    A ``(C, H, W)`` tensor keeps its rank; a flat one (a Dense row space, or a flattened channel map) stays flat.
    """
    kept = tensor.reshape(size, -1)[keep]
    if tensor.dim() == 1:
        return kept.reshape(-1)
    return kept.reshape(int(keep.sum()), *tensor.shape[1:])
