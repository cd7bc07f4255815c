"""Which units a network can lose: hidden neurons and conv channels between a ReLU and the next linear layer."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from certprune.network import Affine, Conv2d, Dense, Flatten, Network, ReLU

LINEAR = (Dense, Conv2d)


@dataclass(frozen=True)
class PrunableLayer:
    """The units computed by ``network.layers[producer]`` and read by the linear layers ``consumers``.

    A unit is a row of a Dense layer or an output channel of a Conv2d. After the producer comes a path of
    consecutive layers, each the sole reader of the one before: only elementwise layers (ReLU, Affine) and
    Flatten, with at least one ReLU, ``relu`` the first; ``end`` is the path's last layer. Every reader of
    ``end`` is a linear layer (one, or several where the activation fans out, as into a residual block and
    its shortcut): those are the ``consumers``, ``consumer`` the first.
    ``relu_ordinal`` is that ReLU's position among the network's ReLU layers (the index of its bounds).
    ``unit_shape`` is the producer's per-sample output shape: ``(N,)`` or ``(C, H, W)``; unit ``k`` owns
    ``tensor.reshape(size, -1)[k]`` of every per-sample tensor between producer and consumers.
    ``relu_shape`` is the per-sample shape of the ReLU's output (flat when a Flatten precedes it).
    """

    producer: int
    relu: int
    relu_ordinal: int
    end: int
    consumers: tuple[int, ...]
    unit_shape: tuple[int, ...]
    relu_shape: tuple[int, ...]

    @property
    def consumer(self) -> int:
        return self.consumers[0]

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
    """Every hidden linear layer followed by a ReLU before the next linear layers; never the output layer.

    Units whose outputs join another branch (an Add, as the channels of a residual stream) are not
    prunable one by one; grouped convolutions are not pruned.
    """
    shapes = network.shapes()
    relu_positions = network.relu_positions()
    result = []
    for producer, layer in enumerate(network.layers):
        if not _ungrouped_linear(layer):
            continue
        end, relu = producer, None
        while network.consumers(end) == [end + 1] and network.inputs[end + 1] == (end,) and isinstance(
                network.layers[end + 1], (ReLU, Affine, Flatten)):
            end += 1
            if isinstance(network.layers[end], ReLU) and relu is None:
                relu = end
        readers = network.consumers(end)
        if relu is not None and readers and all(
                _ungrouped_linear(network.layers[r]) and network.inputs[r] == (end,) for r in readers):
            result.append(PrunableLayer(producer, relu, relu_positions.index(relu), end, tuple(readers),
                                        shapes[producer + 1], shapes[relu + 1]))
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
