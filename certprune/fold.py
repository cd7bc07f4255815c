"""Exact folding of elementwise affine layers (normalisation, BatchNorm, biases) into their neighbours."""
from __future__ import annotations

from dataclasses import replace

import torch

from certprune.network import INPUT, Affine, Conv2d, Dense, Flatten, Network


def fold_affine(network: Network) -> Network:
    """Merge every Affine into an adjacent Dense or Conv2d where that is exact; keep the rest.

    The rules: Affine after Dense or after Conv2d (per-channel) scales rows; Affine before Dense
    (possibly across a Flatten) scales columns and moves the shift into the bias; Affine before an
    unpadded Conv2d does the same per channel; neighbouring Affines compose; identities vanish. In a graph
    a merge happens only along an edge that is the neighbour's sole connection (no other reader or input).
    """
    changed = True
    while changed:
        changed = False
        for i, layer in enumerate(network.layers):
            if isinstance(layer, Affine):
                merged = _merge_at(network, i)
                if merged is not None:
                    network = merged
                    changed = True
                    break
    return network


def _merge_at(network: Network, i: int) -> Network | None:
    layers, affine = network.layers, network.layers[i]
    (source,) = network.inputs[i]
    if bool((affine.scale == 1).all()) and bool((affine.shift == 0).all()) and len(layers) > 1:
        return network.remove_layer(i)
    before = layers[source] if source != INPUT and network.consumers(source) == [i] else None
    merged = None
    if isinstance(before, Affine):
        merged = Affine(before.scale * affine.scale, before.shift * affine.scale + affine.shift)
    elif isinstance(before, Dense):
        merged = _dense_then_affine(before, affine)
    elif isinstance(before, Conv2d) and _per_channel(affine) is not None:
        merged = _conv_then_affine(before, affine)
    if merged is not None:
        return _replace(network, source, merged).remove_layer(i)
    after = _sole_reader(network, i)
    if isinstance(layers[after] if after is not None else None, Dense):
        return _replace(network, after, _affine_then_dense(affine, layers[after])).remove_layer(i)
    if after is not None and isinstance(layers[after], Flatten):
        dense = _sole_reader(network, after)
        if dense is not None and isinstance(layers[dense], Dense):
            flat = Affine(affine.scale.flatten(), affine.shift.flatten())
            return _replace(network, dense, _affine_then_dense(flat, layers[dense])).remove_layer(i)
    if after is not None and isinstance(layers[after], Conv2d):
        folded = _affine_then_conv(affine, layers[after])
        if folded is not None:
            return _replace(network, after, folded).remove_layer(i)
    return None


def _sole_reader(network: Network, i: int) -> int | None:
    """The one layer that reads layer ``i``, when it reads nothing else; else None."""
    readers = network.consumers(i)
    if len(readers) == 1 and network.inputs[readers[0]] == (i,):
        return readers[0]
    return None


def _replace(network: Network, index: int, layer) -> Network:
    layers = list(network.layers)
    layers[index] = layer
    return network.with_layers(layers)


def _per_channel(affine: Affine) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) per channel when both are constant over each channel's pixels, else None."""
    if affine.scale.dim() != 3:
        return None
    channels = affine.scale.shape[0]
    scale = affine.scale.reshape(channels, -1)
    shift = affine.shift.reshape(channels, -1)
    if bool((scale == scale[:, :1]).all()) and bool((shift == shift[:, :1]).all()):
        return scale[:, 0], shift[:, 0]
    return None


def _dense_then_affine(dense: Dense, affine: Affine) -> Dense:
    return Dense(dense.weight * affine.scale[:, None], dense.bias * affine.scale + affine.shift)


def _affine_then_dense(affine: Affine, dense: Dense) -> Dense:
    return Dense(dense.weight * affine.scale[None, :], dense.bias + dense.weight @ affine.shift)


def _conv_then_affine(conv: Conv2d, affine: Affine) -> Conv2d:
    scale, shift = _per_channel(affine)
    return replace(conv, weight=conv.weight * scale[:, None, None, None], bias=conv.bias * scale + shift)


def _affine_then_conv(affine: Affine, conv: Conv2d) -> Conv2d | None:
    """Exact only per channel, and with padding only for a pure scale (padded zeros stay zero)."""
    per_channel = _per_channel(affine)
    if per_channel is None or conv.groups != 1:
        return None
    scale, shift = per_channel
    padded = any(p > 0 for p in conv.padding)
    if padded and bool((shift != 0).any()):
        return None
    weight = conv.weight * scale[None, :, None, None]
    bias = conv.bias + (conv.weight * shift[None, :, None, None]).sum(dim=(1, 2, 3))
    return replace(conv, weight=weight, bias=bias)
