"""Random ReLU networks for tests: dense or convolutional chains, optionally with elementwise Affine layers."""
from __future__ import annotations

import math

import torch

from certprune.network import Affine, Conv2d, Dense, Flatten, Network, ReLU


def random_network(depth: int, width: int, input_shape, conv: bool = False, seed: int = 0, *,
                   outputs: int = 3, affine: bool = False, dtype: torch.dtype = torch.float32) -> Network:
    """A random network with ``depth`` ReLU layers of ``width`` neurons (channels when convolutional).

    ``conv`` puts ceil(depth / 2) convolutions (random kernel, stride, padding) before a Flatten and the
    dense layers; it needs a (C, H, W) input. ``affine`` inserts Affine layers with scales of both signs
    after some affine layers and ReLUs. He-scaled weights and random biases leave many neurons unstable.
    """
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(int(d) for d in input_shape)
    layers = []
    n_conv = math.ceil(depth / 2) if conv else 0
    if conv and len(shape) != 3:
        raise ValueError(f"a convolutional network needs a (C, H, W) input, got {shape}")
    for _ in range(n_conv):
        layers.append(_conv(shape, width, gen))
        shape = layers[-1].output_shape(shape)
        _activation(layers, shape, affine, gen)
    if len(shape) != 1:
        layers.append(Flatten())
        shape = (math.prod(shape),)
    for _ in range(depth - n_conv):
        layers.append(_dense(shape[0], width, gen))
        shape = (width,)
        _activation(layers, shape, affine, gen)
    layers.append(_dense(shape[0], outputs, gen))
    return Network(tuple(layers), tuple(int(d) for d in input_shape)).to(dtype)


def _dense(n_in: int, n_out: int, gen) -> Dense:
    weight = torch.randn(n_out, n_in, generator=gen) * math.sqrt(2.0 / n_in)
    return Dense(weight, 0.3 * torch.randn(n_out, generator=gen))


def _conv(shape, channels: int, gen) -> Conv2d:
    c_in, h, w = shape
    padding = int(torch.randint(0, 2, (), generator=gen))
    stride = int(torch.randint(1, 3, (), generator=gen))
    kernel = max(1, min(3, h + 2 * padding, w + 2 * padding, int(torch.randint(1, 4, (), generator=gen))))
    weight = torch.randn(channels, c_in, kernel, kernel, generator=gen) * math.sqrt(2.0 / (c_in * kernel * kernel))
    bias = 0.3 * torch.randn(channels, generator=gen)
    return Conv2d(weight, bias, (stride, stride), (padding, padding))


def _activation(layers: list, shape, affine: bool, gen) -> None:
    # Affine before the ReLU (a leftover normalisation) or after it, with scales of both signs.
    where = int(torch.randint(0, 3, (), generator=gen)) if affine else 2
    if where == 0:
        layers.append(_affine(shape, gen))
    layers.append(ReLU())
    if where == 1:
        layers.append(_affine(shape, gen))


def _affine(shape, gen) -> Affine:
    scale = torch.empty(shape).uniform_(-1.5, 1.5, generator=gen)
    return Affine(scale, 0.3 * torch.randn(shape, generator=gen))
