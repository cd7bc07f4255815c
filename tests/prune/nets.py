"""Small random networks covering every surgery path: Dense, Conv2d (padded and not), Flatten, Affine between."""
from __future__ import annotations

import torch

from certprune.network import Affine, Conv2d, Dense, Flatten, Network, ReLU


def _dense(g, n_in, n_out):
    return Dense(torch.randn(n_out, n_in, generator=g) / n_in ** 0.5, torch.randn(n_out, generator=g) * 0.1)


def _conv(g, c_in, c_out, k, padding):
    w = torch.randn(c_out, c_in, k, k, generator=g) / (c_in * k * k) ** 0.5
    return Conv2d(w, torch.randn(c_out, generator=g) * 0.1, (1, 1), (padding, padding))


def _affine(g, shape):
    return Affine(1 + 0.3 * torch.randn(shape, generator=g), 0.2 * torch.randn(shape, generator=g))


def mlp(seed: int = 0) -> Network:
    g = torch.Generator().manual_seed(seed)
    return Network((_dense(g, 6, 12), ReLU(), _dense(g, 12, 10), ReLU(), _dense(g, 10, 3)), (6,))


def mlp_affine(seed: int = 0) -> Network:
    """Affines on both sides of a ReLU (BatchNorm-like, left unfolded) and a single logit."""
    g = torch.Generator().manual_seed(seed)
    return Network((_dense(g, 5, 10), _affine(g, (10,)), ReLU(), _affine(g, (10,)), _dense(g, 10, 8), ReLU(),
                    _dense(g, 8, 1)), (5,))


def cnn(seed: int = 0) -> Network:
    """conv (no padding) -> conv (padding 1) -> flatten -> dense: channels feed a conv and a dense consumer."""
    g = torch.Generator().manual_seed(seed)
    return Network((_conv(g, 1, 4, 3, 0), ReLU(), _conv(g, 4, 5, 3, 1), ReLU(), Flatten(), _dense(g, 80, 10),
                    ReLU(), _dense(g, 10, 3)), (1, 6, 6))


def cnn_affine(seed: int = 0) -> Network:
    """A per-pixel Affine after a ReLU feeding a padded conv: a removed channel's shift is not one bias."""
    g = torch.Generator().manual_seed(seed)
    return Network((_conv(g, 2, 6, 3, 1), ReLU(), _affine(g, (6, 5, 5)), _conv(g, 6, 4, 3, 1), ReLU(), Flatten(),
                    _dense(g, 100, 2)), (2, 5, 5))


def generated(seed: int = 1) -> Network:
    """The bounds tests' generator: random strides and paddings, Affines of both signs after layers and ReLUs."""
    from tests.netgen import random_network

    return random_network(3, 4, (2, 8, 8), conv=True, seed=seed, affine=True)


NETWORKS = {"mlp": mlp, "mlp_affine": mlp_affine, "cnn": cnn, "cnn_affine": cnn_affine, "generated": generated}


def with_dead_units(network: Network, share: float = 0.25) -> Network:
    """The same network with ``share`` of each prunable layer's units (at least one) dead on every input: zero
    incoming weights and a bias whose image through the Affines before the ReLU is negative (the first units
    for which such a bias exists; a per-pixel scale of both signs in every channel leaves a layer as it is)."""
    from dataclasses import replace

    from certprune.prune import prunable_layers

    layers = list(network.layers)
    for info in prunable_layers(network):
        layer = layers[info.producer]
        weight, bias = layer.weight.clone(), layer.bias.clone()
        wanted = max(1, int(share * info.size))
        for unit in range(info.size):
            value = _negative_bias(layers[info.producer + 1: info.relu], info, unit)
            if value is not None and wanted > 0:
                weight[unit], bias[unit], wanted = 0, value, wanted - 1
        layers[info.producer] = replace(layer, weight=weight, bias=bias)
    return network.with_layers(layers)


def _negative_bias(between, info, unit: int) -> float | None:
    """A constant for ``unit`` that the elementwise layers before its ReLU map below zero everywhere, if any."""
    for value in (-1.0, 1.0, -10.0, 10.0, -100.0, 100.0):
        h = torch.zeros((1, *info.unit_shape))
        h.reshape(info.size, -1)[unit] = value
        for layer in between:
            h = layer.forward(h)
        if bool((h.reshape(info.size, -1)[unit] < 0).all()):
            return value
    return None
