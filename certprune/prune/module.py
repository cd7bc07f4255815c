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

    def crown_bounds(self, lower: torch.Tensor, upper: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Differentiable CROWN: (l, u) of the input of every ReLU layer, intersected with IBP's (B, ...).

        Each ReLU input is bounded by back-substitution to the input box through the earlier layers, whose
        ReLUs are relaxed with the triangle's upper line and CROWN's adaptive lower slope. Dense, Affine and
        Flatten layers only (a convolution raises UnsupportedLayerError); for training, not proof.
        """
        for index, layer in enumerate(self.template.layers):
            if isinstance(layer, Conv2d):
                raise UnsupportedLayerError(f"the CROWN stability loss supports dense networks; layer {index} "
                                            "is a convolution (use the IBP loss)")
        intervals = self.interval_bounds(lower, upper)
        center, radius = ((lower + upper) / 2).flatten(1), ((upper - lower) / 2).flatten(1)
        done: list[tuple[torch.Tensor, torch.Tensor]] = []
        for index, layer in enumerate(self.template.layers):
            if not isinstance(layer, ReLU):
                continue
            lo_ibp, hi_ibp = (t.flatten(1) for t in intervals[len(done)])
            n = lo_ibp.shape[1]
            rows = torch.cat([torch.eye(n), -torch.eye(n)]).expand(len(lower), 2 * n, n)
            bound = self._back_substitute(index, rows, done, center, radius)
            lo, hi = torch.maximum(bound[:, :n], lo_ibp), torch.minimum(-bound[:, n:], hi_ibp)
            done.append((lo, hi))
        return [(lo.reshape(a.shape), hi.reshape(b.shape)) for (lo, hi), (a, b) in zip(done, intervals)]

    def _back_substitute(self, end: int, rows: torch.Tensor, relaxed: list, center, radius) -> torch.Tensor:
        """Lower bounds (B, R) of ``rows @ z`` where z is the input of layer ``end``, over the input box."""
        constant = torch.zeros(rows.shape[:2])
        relu = len(relaxed)
        for index in range(end - 1, -1, -1):
            layer = self.template.layers[index]
            if isinstance(layer, Dense):
                constant = constant + rows @ self.biases[str(index)]
                rows = rows @ self.weight(index)
            elif isinstance(layer, Affine):
                constant = constant + rows @ layer.shift.to(torch.float32).flatten()
                rows = rows * layer.scale.to(torch.float32).flatten()
            elif isinstance(layer, ReLU):
                relu -= 1
                lo, hi = relaxed[relu]
                unstable = (lo < 0) & (hi > 0)
                upper_slope = torch.where(unstable, hi / (hi - lo).clamp_min(1e-12), (lo >= 0).float())
                upper_shift = torch.where(unstable, -upper_slope * lo, torch.zeros_like(lo))
                lower_slope = torch.where(unstable, (hi > -lo).float(), (lo >= 0).float())
                positive, negative = rows.clamp(min=0), rows.clamp(max=0)
                constant = constant + (negative * upper_shift[:, None, :]).sum(-1)
                rows = positive * lower_slope[:, None, :] + negative * upper_slope[:, None, :]
        return constant + (rows @ center[:, :, None]).squeeze(-1) - (rows.abs() @ radius[:, :, None]).squeeze(-1)

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
