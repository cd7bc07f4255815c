"""Random ReLU networks for tests: dense or convolutional chains, optionally with elementwise Affine layers,
and graphs that branch and join (residual Add, Concat, pooling, padding, transposes)."""
from __future__ import annotations

import math

import torch

from certprune.network import (INPUT, Add, Affine, Concat, Conv2d, Dense, Flatten, MaxPool2d, Network, Pad, ReLU,
                               Reshape, Transpose)


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


def random_graph(seed: int, *, kind: str = "conv", width: int = 4, outputs: int = 3,
                 dtype: torch.dtype = torch.float32) -> Network:
    """A random network whose layers branch and join, with every layer kind the graph supports.

    ``kind="conv"`` (input (2, 6, 6)): a convolution, a residual block (conv, ReLU, conv, Add of the block's
    input; sometimes through an asymmetric Pad or a grouped conv), a max pool or a depthwise average, a
    Concat of two ReLU branches, a Transpose and a Reshape, then dense layers. ``kind="dense"`` (input (5,)):
    dense residual blocks with Add and a Concat of two branches. He-scaled weights leave ReLUs unstable.
    """
    gen = torch.Generator().manual_seed(seed)
    pick = lambda n: int(torch.randint(0, n, (), generator=gen))  # noqa: E731
    layers, wiring, shapes = [], [], []

    def add(layer, *sources):
        shape = layer.output_shape(*((input_shape if j == INPUT else shapes[j]) for j in sources))
        layers.append(layer)
        wiring.append(tuple(sources))
        shapes.append(shape)
        return len(layers) - 1

    if kind == "dense":
        input_shape = (5,)
        x = add(_dense(5, width, gen), INPUT)
        x = add(ReLU(), x)
        for _ in range(1 + pick(2)):  # residual blocks
            h = add(ReLU(), add(_dense(width, width, gen), x))
            x = add(Add(), x, add(_dense(width, width, gen), h))
            x = add(ReLU(), x) if pick(2) else x
        a = add(ReLU(), add(_dense(width, width, gen), x))
        b = add(ReLU(), add(_dense(width, 3, gen), x))
        x = add(Concat(0), a, b)
        n = width + 3
    else:
        input_shape = (2, 6, 6)
        x = add(ReLU(), add(_conv(input_shape, width, gen), INPUT))
        c, h, w = shapes[x]
        # residual block: conv (same size) -> ReLU -> conv (same size), added to the block's input
        inner = add(Pad((0, 1, 0), (0, 1, 2)), x) if pick(2) else None  # asymmetric: (h + 2, w + 2)
        first = Conv2d(torch.randn(c, c, 3, 3, generator=gen) * math.sqrt(2.0 / (9 * c)),
                       0.3 * torch.randn(c, generator=gen), (1, 1), (0, 0) if inner is not None else (1, 1))
        y = add(ReLU(), add(first, inner if inner is not None else x))
        groups = c if pick(2) else 1
        second = Conv2d(torch.randn(c, c // groups, 3, 3, generator=gen) * math.sqrt(2.0 / (9 * c // groups)),
                        0.3 * torch.randn(c, generator=gen), (1, 1), (1, 1), (1, 1), groups)
        x = add(ReLU(), add(Add(), x, add(second, y)))
        if pick(2):
            x = add(MaxPool2d((2, 2), (2, 2), (pick(2), pick(2))), x)
        else:
            x = add(Conv2d(torch.full((c, 1, 2, 2), 0.25), torch.zeros(c), (2, 2), (0, 0), (1, 1), c), x)
        c, h, w = shapes[x]
        a = add(ReLU(), add(Conv2d(torch.randn(2, c, 1, 1, generator=gen), 0.3 * torch.randn(2, generator=gen)), x))
        x = add(Concat(0), x, a)
        x = add(Transpose((1, 2, 0)), x)
        x = add(Reshape((h * w, c + 2)), x)
        n = (c + 2) * h * w
        x = add(Flatten(), x)
    x = add(ReLU(), add(_dense(n, width, gen), x))
    add(_dense(width, outputs, gen), x)
    return Network(tuple(layers), input_shape, inputs=tuple(wiring)).to(dtype)
