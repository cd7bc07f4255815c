"""Which units a network can lose: hidden neurons and conv channels between a ReLU and the next linear layer."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from certprune.network import Conv2d, Dense, Network, ReLU

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
    """Every hidden linear layer followed by a ReLU before the next linear layer; never the output layer."""
    shapes = network.shapes()
    linear = [i for i, layer in enumerate(network.layers) if isinstance(layer, LINEAR)]
    relu_positions = [i for i, layer in enumerate(network.layers) if isinstance(layer, ReLU)]
    result = []
    for producer, consumer in zip(linear, linear[1:]):
        relus = [i for i in relu_positions if producer < i < consumer]
        if relus:
            result.append(PrunableLayer(producer, relus[0], relu_positions.index(relus[0]), consumer,
                                        shapes[producer + 1], shapes[relus[0] + 1]))
    return tuple(result)


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
