"""Physical removal of neurons and channels: the pruned Network (and its ONNX) is really smaller.

Removing unit k of a prunable layer deletes row k of its producer (a Dense row or a Conv2d filter), the
matching entries of any Affine between producer and consumer, and the consumer's input columns that read
it (a block of H * W columns when a Flatten lies between a conv and a Dense). The removed unit's
post-ReLU output is replaced by a constant ``fill`` (zero by default, or its mean over data): the
consumer's response to that constant is computed exactly and added to its bias (or, when a padded conv
makes it vary near the border, kept as an Affine shift after the consumer). The result is exactly
``mask_units(network, remove, fill)``, the original with those outputs overwritten. A unit whose ReLU
is stably inactive on a box outputs zero there, so removing it with fill zero is exact on the box.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from certprune.bounds import CROWN
from certprune.errors import CertpruneError
from certprune.network import Affine, Conv2d, Dense, Layer, Network
from certprune.prune.structure import PrunableLayer, keep_units, prunable_layers

Masks = Sequence[torch.Tensor]


def remove_units(network: Network, remove: Masks, fill: Sequence[torch.Tensor | None] | None = None) -> Network:
    """A smaller network without the units marked True in ``remove`` (one bool mask per prunable layer).

    ``fill[k]`` (optional, the per-sample shape of layer k's ReLU output) is the constant that stands in for
    the removed units' outputs; by default zero.
    """
    infos = prunable_layers(network)
    remove = check_masks(network, remove)
    fills = _check_fills(network, infos, fill)
    # Back to front, each unit layer found again in the network as it is by then: a surgery can insert an
    # Affine after a consumer, which moves the indices after it (a fanned-out consumer may lie there).
    for k in reversed(range(len(infos))):
        if bool(remove[k].any()):
            network = _remove(network, prunable_layers(network)[k], remove[k], fills[k])
    return network


def mask_units(network: Network, remove: Masks, fill: Sequence[torch.Tensor | None] | None = None) -> Network:
    """The same-size reference: each marked unit's ReLU output overwritten by ``fill`` (zero by default).

    Implemented as an Affine after each ReLU (scale 0 and shift ``fill`` on removed units, identity elsewhere).
    """
    infos = prunable_layers(network)
    remove = check_masks(network, remove)
    fills = _check_fills(network, infos, fill)
    shapes = network.shapes()
    for info, mask, value in reversed(list(zip(infos, remove, fills))):
        shape = shapes[info.relu + 1]
        removed = mask.to(network.dtype)[:, None].expand(info.size, info.positions).reshape(shape)
        value = torch.zeros(shape, dtype=network.dtype) if value is None else value.to(network.dtype)
        network = network.insert_after(info.relu, Affine(1 - removed, value * removed))
    return network


def check_masks(network: Network, remove: Masks) -> list[torch.Tensor]:
    """Bool masks, one per prunable layer with one entry per unit, each keeping at least one unit."""
    infos = prunable_layers(network)
    remove = list(remove)
    if len(remove) != len(infos):
        raise CertpruneError(f"got {len(remove)} removal masks; the network has {len(infos)} prunable layers")
    checked = []
    for k, (info, mask) in enumerate(zip(infos, remove)):
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if tuple(mask.shape) != (info.size,):
            raise CertpruneError(f"removal mask {k} has shape {tuple(mask.shape)}; layer {info.producer} "
                                 f"has {info.size} units")
        if bool(mask.all()):
            raise CertpruneError(f"removal mask {k} removes all {info.size} units of layer {info.producer}")
        checked.append(mask)
    return checked


def _check_fills(network: Network, infos, fill) -> list[torch.Tensor | None]:
    if fill is None:
        return [None] * len(infos)
    fill = list(fill)
    shapes = network.shapes()
    if len(fill) != len(infos):
        raise CertpruneError(f"got {len(fill)} fill tensors; the network has {len(infos)} prunable layers")
    for k, (info, value) in enumerate(zip(infos, fill)):
        if value is not None and tuple(value.shape) != shapes[info.relu + 1]:
            raise CertpruneError(f"fill {k} has shape {tuple(value.shape)}, expected {shapes[info.relu + 1]}")
    return fill


def _remove(network: Network, info: PrunableLayer, mask: torch.Tensor, fill: torch.Tensor | None) -> Network:
    layers = network.layers
    keep = ~mask
    new = list(layers)
    producer = layers[info.producer]
    new[info.producer] = replace(producer, weight=producer.weight[keep], bias=producer.bias[keep])
    for i in range(info.producer + 1, info.end + 1):
        if isinstance(layers[i], Affine):
            new[i] = Affine(keep_units(layers[i].scale, keep, info.size), keep_units(layers[i].shift, keep, info.size))
    contributions = {}
    for index in info.consumers:
        contributions[index] = _removed_contribution(layers, info, index, mask, fill)
        consumer = layers[index]
        if isinstance(consumer, Dense):
            out = consumer.weight.shape[0]
            weight = consumer.weight.reshape(out, info.size, -1)[:, keep].reshape(out, -1)
        else:
            weight = consumer.weight[:, keep]
        new[index] = replace(consumer, weight=weight)
    network = network.with_layers(new)
    for index in sorted(info.consumers, reverse=True):  # back to front: an inserted Affine shifts later indices
        network = _add_constant(network, index, contributions[index])
    return network


def _removed_contribution(layers: Sequence[Layer], info: PrunableLayer, consumer_index: int, mask: torch.Tensor,
                          fill: torch.Tensor | None) -> torch.Tensor | None:
    """What one consumer (without its bias) receives from the removed units, in float64, or None for nothing.

    That is their fill carried through the elementwise layers after the ReLU; an Affine shift there makes
    it nonzero even for fill zero.
    """
    between = layers[info.relu + 1: info.end + 1]
    if fill is None and not any(isinstance(layer, Affine) for layer in between):
        return None
    value = torch.zeros((1, *info.relu_shape), dtype=torch.float64) if fill is None else fill.to(torch.float64)[None]
    for layer in between:
        value = layer.to(torch.float64).forward(value)
    removed = (value.reshape(info.size, -1) * mask.to(torch.float64)[:, None]).reshape(value.shape)
    if not bool((removed != 0).any()):
        return None
    consumer = layers[consumer_index]
    weight = consumer.weight.to(torch.float64)
    if isinstance(consumer, Dense):
        return F.linear(removed, weight)[0]
    return F.conv2d(removed, weight, None, consumer.stride, consumer.padding, consumer.dilation, consumer.groups)[0]


def _add_constant(network: Network, index: int, contribution: torch.Tensor | None) -> Network:
    """Add a constant response to the output of linear layer ``index``: to its bias when it is one value per
    unit (always for Dense; for Conv2d away from zero padding), else as an Affine shift right after it."""
    if contribution is None:
        return network
    layer = network.layers[index]
    dtype = layer.bias.dtype
    per_unit = contribution.reshape(contribution.shape[0], -1)
    if bool((per_unit == per_unit[:, :1]).all()):
        layers = list(network.layers)
        layers[index] = replace(layer, bias=(layer.bias.to(torch.float64) + per_unit[:, 0]).to(dtype))
        return network.with_layers(layers)
    return network.insert_after(index, Affine(torch.ones_like(contribution, dtype=dtype), contribution.to(dtype)))


def mean_fill(network: Network, x: torch.Tensor, batch_size: int = 512) -> list[torch.Tensor]:
    """Per prunable layer, the mean post-ReLU output over the samples ``x`` (the ReLU output's shape).

    As ``fill`` it folds a removed unit's average contribution into the next bias instead of dropping it.
    """
    infos = prunable_layers(network)
    wanted = {info.relu: k for k, info in enumerate(infos)}
    sums = [torch.zeros(info.relu_shape, dtype=torch.float64) for info in infos]
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            outputs = network.trace(x[start: start + batch_size].to(network.dtype))
            for i, k in wanted.items():
                sums[k] += outputs[i].to(torch.float64).sum(dim=0)
    return [(s / max(len(x), 1)).to(network.dtype) for s in sums]


def dead_units(network: Network, lower: torch.Tensor, upper: torch.Tensor, method=None) -> list[torch.Tensor]:
    """Per prunable layer, the units whose ReLU is stably inactive at every position on every box.

    ``lower``/``upper`` are one box (the input shape) or a batch of boxes; ``method`` is a bound method
    (``certprune.bounds``; CROWN by default).
    """
    if tuple(lower.shape) == network.input_shape:
        lower, upper = lower[None], upper[None]
    bounds = (method or CROWN()).compute(network, lower, upper)
    result = []
    for info in prunable_layers(network):
        inactive = bounds.stable_inactive(info.relu_ordinal)
        result.append(inactive.reshape(inactive.shape[0], info.size, -1).all(dim=2).all(dim=0))
    return result


def prune_dead(network: Network, lower: torch.Tensor, upper: torch.Tensor, method=None) -> Network:
    """Remove every unit proven stably inactive on the box(es): the result equals the original there.

    A layer whose units are all dead keeps its first one (it outputs zero on the boxes anyway).
    """
    dead = [mask.clone() for mask in dead_units(network, lower, upper, method)]
    for mask in dead:
        if bool(mask.all()):
            mask[0] = False
    return remove_units(network, dead)


def apply_weight_masks(network: Network, masks: Mapping[int, torch.Tensor]) -> Network:
    """Unstructured pruning: zero the weights where ``masks[layer index]`` is False (same shapes, not smaller)."""
    layers = list(network.layers)
    for index, mask in masks.items():
        layer = layers[index]
        if not isinstance(layer, (Dense, Conv2d)) or tuple(mask.shape) != tuple(layer.weight.shape):
            raise CertpruneError(f"weight mask for layer {index} has shape {tuple(mask.shape)}; the layer is "
                                 f"{type(layer).__name__} with weight {tuple(getattr(layer, 'weight', torch.empty(0)).shape)}")
        layers[index] = replace(layer, weight=layer.weight * mask.to(layer.weight.dtype))
    return network.with_layers(layers)
