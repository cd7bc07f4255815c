"""A trainable torch form of a Network: parameters per linear layer, a traced forward and differentiable IBP.

Fine-tuning, gradient-based importance and the stability regulariser need autograd through the weights;
``certprune.bounds`` computes sound bounds without it (and widens them for rounding), so the regulariser's
interval bounds are computed here, on the module's own tensors: training code, not a verifier.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from certprune.errors import UnsupportedLayerError
from certprune.network import Affine, Conv2d, Dense, Flatten, Network, ReLU


class NetworkModule(nn.Module):
    """The layers of ``network`` with Dense/Conv2d weights and biases as parameters (Affine stays fixed).

    ``input_scale`` (one positive value per input column or channel of the first linear layer) makes that
    layer's parameter ``weight * input_scale``: a preconditioning for training on raw features.
    ``weight_masks`` (layer index -> 0/1 tensor of the weight's shape) are multiplied into the weights on
    every forward pass, so masked weights stay exactly zero in the network ``to_network`` returns.
    """

    def __init__(self, network: Network, weight_masks: Mapping[int, torch.Tensor] | None = None,
                 input_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        self.template = network
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        for index, layer in enumerate(network.layers):
            if isinstance(layer, (Dense, Conv2d)):
                self.weights[str(index)] = nn.Parameter(layer.weight.detach().to(torch.float32).clone())
                self.biases[str(index)] = nn.Parameter(layer.bias.detach().to(torch.float32).clone())
            elif not isinstance(layer, (ReLU, Flatten, Affine)):
                raise UnsupportedLayerError(f"cannot train layer kind {type(layer).__name__} (layer {index})")
        self.masks = {str(i): m.to(torch.float32) for i, m in (weight_masks or {}).items()}
        self.first = next(iter(self.weights), None)
        self.scale = None
        if input_scale is not None and self.first is not None:
            # Store the first layer's weight in units of its inputs' widths: w' = w * s per input column
            # (per channel for a conv). Adam's steps are then alike for a pixel and for a raw amount in 10^4.
            w = self.weights[self.first]
            self.scale = input_scale.to(torch.float32).reshape((1, -1) + (1,) * (w.dim() - 2))
            with torch.no_grad():
                w.mul_(self.scale)

    def weight(self, index: int) -> torch.Tensor:
        w = self.weights[str(index)]
        if self.scale is not None and str(index) == self.first:
            w = w / self.scale
        mask = self.masks.get(str(index))
        return w if mask is None else w * mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trace(x)[0]

    def trace(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the output of every ReLU layer, in order (tensors in the autograd graph)."""
        relus = []
        for index, layer in enumerate(self.template.layers):
            if isinstance(layer, Dense):
                x = F.linear(x, self.weight(index), self.biases[str(index)])
            elif isinstance(layer, Conv2d):
                x = F.conv2d(x, self.weight(index), self.biases[str(index)], layer.stride, layer.padding,
                             layer.dilation)
            elif isinstance(layer, ReLU):
                x = torch.relu(x)
                relus.append(x)
            else:
                x = layer.to(torch.float32).forward(x)
        return x, relus

    def interval_bounds(self, lower: torch.Tensor, upper: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Differentiable IBP: (l, u) of the input of every ReLU layer over the boxes [lower, upper] (B, ...).

        Center-radius form (Gowal et al. 2018); not widened for rounding, so it is for training, not proof.
        """
        center, radius = (lower + upper) / 2, (upper - lower) / 2
        pre = []
        for index, layer in enumerate(self.template.layers):
            if isinstance(layer, Dense):
                w = self.weight(index)
                center, radius = F.linear(center, w, self.biases[str(index)]), F.linear(radius, w.abs())
            elif isinstance(layer, Conv2d):
                w, args = self.weight(index), (layer.stride, layer.padding, layer.dilation)
                center = F.conv2d(center, w, self.biases[str(index)], *args)
                radius = F.conv2d(radius, w.abs(), None, *args)
            elif isinstance(layer, Affine):
                scale = layer.scale.to(torch.float32)
                center, radius = center * scale + layer.shift.to(torch.float32), radius * scale.abs()
            elif isinstance(layer, Flatten):
                center, radius = center.flatten(1), radius.flatten(1)
            else:
                lo, hi = center - radius, center + radius
                pre.append((lo, hi))
                lo, hi = torch.relu(lo), torch.relu(hi)
                center, radius = (lo + hi) / 2, (hi - lo) / 2
        return pre

    def to_network(self) -> Network:
        """The trained weights as a Network with the template's structure, dtype and metadata."""
        layers = list(self.template.layers)
        dtype = self.template.dtype
        for key in self.weights:
            index = int(key)
            layer = layers[index]
            with torch.no_grad():
                weight = self.weight(index).detach().to(dtype).clone()
                bias = self.biases[key].detach().to(dtype).clone()
            layers[index] = Dense(weight, bias) if isinstance(layer, Dense) else Conv2d(
                weight, bias, layer.stride, layer.padding, layer.dilation)
        return self.template.with_layers(layers)
