"""BatchNorm as a trainable per-unit scale: unfold it from the weights before training, fold it back after.

Loading folds BatchNorm into the layer before it, so its scale gamma is gone from the Network. Unfolding
writes that layer as ``(W / gamma, b / gamma)`` followed by an Affine of scale gamma and shift 0: the same
function, with gamma back as a parameter that training updates (BatchNorm in eval form, without batch
statistics), that the NRS loss and criterion divide by and network slimming penalises and ranks.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import torch

from certprune.fold import fold_affine
from certprune.network import Affine, Network
from certprune.prune.module import unit_affines
from certprune.prune.structure import LINEAR, prunable_layers


def unfold_batchnorm(network: Network, gammas: Mapping[int, torch.Tensor] | None = None) -> Network:
    """Every prunable layer without a per-unit Affine gets one: scale ``gammas[k]`` (keyed by the producer's
    position among the Dense/Conv2d layers, as ``BatchNormScale.from_onnx`` reads them), else 1.

    A zero gamma (a constant unit) is left at 1 rather than divided by.
    """
    gammas = gammas or {}
    scaled = unit_affines(network)
    has_scale = {info.producer for info in prunable_layers(network)
                 if any(index in scaled for index in range(info.producer + 1, info.relu))}
    linear = [i for i, layer in enumerate(network.layers) if isinstance(layer, LINEAR)]
    for info in reversed(prunable_layers(network)):
        if info.producer in has_scale:
            continue
        gamma = torch.as_tensor(gammas.get(linear.index(info.producer), torch.ones(info.size)))
        gamma = gamma.reshape(-1).to(network.dtype)
        gamma = torch.where(gamma == 0, torch.ones_like(gamma), gamma)
        layers = list(network.layers)
        producer = layers[info.producer]
        view = (info.size,) + (1,) * (producer.weight.dim() - 1)
        layers[info.producer] = replace(producer, weight=producer.weight / gamma.reshape(view),
                                        bias=producer.bias / gamma)
        per_position = gamma.reshape((info.size,) + (1,) * (len(info.unit_shape) - 1)).expand(info.unit_shape)
        network = network.with_layers(layers).insert_after(
            info.producer, Affine(per_position.clone(), torch.zeros(info.unit_shape, dtype=network.dtype)))
    return network


def fold_unit_scales(network: Network) -> Network:
    """The same function with every foldable Affine merged into its neighbour (``certprune.fold``)."""
    return fold_affine(network)
