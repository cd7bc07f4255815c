"""Exact folding of elementwise affine layers (normalisation, BatchNorm, biases) into their neighbours."""
from __future__ import annotations

from typing import Sequence

import torch

from certprune.network import Affine, Conv2d, Dense, Flatten, Layer


def fold_affine(layers: Sequence[Layer]) -> tuple[Layer, ...]:
    """Merge every Affine into an adjacent Dense or Conv2d where that is exact; keep the rest.

    The rules: Affine after Dense or after Conv2d (per-channel) scales rows; Affine before Dense
    (possibly across a Flatten) scales columns and moves the shift into the bias; Affine before an
    unpadded Conv2d does the same per channel; neighbouring Affines compose; identities vanish.
    """
    layers = list(layers)
    changed = True
    while changed:
        changed = False
        for i, layer in enumerate(layers):
            if not isinstance(layer, Affine):
                continue
            merged = _merge_at(layers, i)
            if merged is not None:
                layers = merged
                changed = True
                break
    return tuple(layers)


def _merge_at(layers: list[Layer], i: int) -> list[Layer] | None:
    affine = layers[i]
    if bool((affine.scale == 1).all()) and bool((affine.shift == 0).all()):
        return layers[:i] + layers[i + 1:]
    before = layers[i - 1] if i > 0 else None
    if isinstance(before, Affine):
        both = Affine(before.scale * affine.scale, before.shift * affine.scale + affine.shift)
        return layers[:i - 1] + [both] + layers[i + 1:]
    if isinstance(before, Dense):
        return layers[:i - 1] + [_dense_then_affine(before, affine)] + layers[i + 1:]
    if isinstance(before, Conv2d) and _per_channel(affine) is not None:
        return layers[:i - 1] + [_conv_then_affine(before, affine)] + layers[i + 1:]
    after = layers[i + 1] if i + 1 < len(layers) else None
    if isinstance(after, Dense):
        return layers[:i] + [_affine_then_dense(affine, after)] + layers[i + 2:]
    if isinstance(after, Flatten) and i + 2 < len(layers) and isinstance(layers[i + 2], Dense):
        flat = Affine(affine.scale.flatten(), affine.shift.flatten())
        return layers[:i] + [after, _affine_then_dense(flat, layers[i + 2])] + layers[i + 3:]
    if isinstance(after, Conv2d):
        folded = _affine_then_conv(affine, after)
        if folded is not None:
            return layers[:i] + [folded] + layers[i + 2:]
    return None


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
    return Conv2d(conv.weight * scale[:, None, None, None], conv.bias * scale + shift,
                  conv.stride, conv.padding, conv.dilation)


def _affine_then_conv(affine: Affine, conv: Conv2d) -> Conv2d | None:
    """Exact only per channel, and with padding only for a pure scale (padded zeros stay zero)."""
    per_channel = _per_channel(affine)
    if per_channel is None:
        return None
    scale, shift = per_channel
    padded = any(p > 0 for p in conv.padding)
    if padded and bool((shift != 0).any()):
        return None
    weight = conv.weight * scale[None, :, None, None]
    bias = conv.bias + (conv.weight * shift[None, :, None, None]).sum(dim=(1, 2, 3))
    return Conv2d(weight, bias, conv.stride, conv.padding, conv.dilation)
