"""A trainable torch form of a Network: parameters per linear layer (and per-unit scales), a traced forward.

Training, gradient-based importance and the stability regularisers need autograd through the weights;
``certprune.bounds`` computes sound bounds without it (and widens them for rounding), so the training
bounds are computed on the module's own tensors (here and in ``robust``): training code, not a verifier.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from certprune.errors import UnsupportedLayerError
from certprune.network import Affine, Conv2d, Dense, Layer, Network, ReLU
from certprune.prune.structure import prunable_layers


class NetworkModule(nn.Module):
    """The layers of ``network`` with Dense/Conv2d weights and biases as parameters.

    An Affine between a unit's producer and its ReLU that is constant over each unit's positions (BatchNorm
    in eval form, as ``unfold_batchnorm`` leaves it) is trained too, as one scale and shift per unit; every
    other Affine (input normalisation) stays fixed.
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
        self.scales = nn.ParameterDict()
        self.shifts = nn.ParameterDict()
        self.unit_shapes: dict[str, tuple[int, ...]] = {}
        for index, shape in unit_affines(network).items():
            layer = network.layers[index]
            self.scales[str(index)] = nn.Parameter(layer.scale.detach().reshape(shape[0], -1)[:, 0].float().clone())
            self.shifts[str(index)] = nn.Parameter(layer.shift.detach().reshape(shape[0], -1)[:, 0].float().clone())
            self.unit_shapes[str(index)] = shape
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

    def unit_scale(self, index: int) -> torch.Tensor | None:
        """The trained per-unit scale of the Affine at ``index`` (None when that Affine is fixed)."""
        return self.scales[str(index)] if str(index) in self.scales else None

    def layer(self, index: int) -> Layer:
        """Layer ``index`` as a record holding the module's current tensors (in the autograd graph)."""
        layer = self.template.layers[index]
        key = str(index)
        if isinstance(layer, Dense):
            return Dense(self.weight(index), self.biases[key])
        if isinstance(layer, Conv2d):
            return replace(layer, weight=self.weight(index), bias=self.biases[key])
        if key in self.scales:
            shape = self.unit_shapes[key]
            view = (shape[0],) + (1,) * (len(shape) - 1)
            scale, shift = self.scales[key].reshape(view), self.shifts[key].reshape(view)
            return Affine(scale.expand(shape), shift.expand(shape))
        return layer.to(torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trace(x)[0]

    def trace(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the output of every ReLU layer, in order (tensors in the autograd graph)."""
        relus, values = [], [x]
        for index, (layer, sources) in enumerate(zip(self.template.layers, self.template.inputs)):
            xs = [values[j + 1] for j in sources]
            if isinstance(layer, ReLU):
                values.append(torch.relu(xs[0]))
                relus.append(values[-1])
            else:
                values.append(self.layer(index).forward(*xs))
        return values[-1], relus

    def interval_bounds(self, lower: torch.Tensor, upper: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Differentiable IBP: (l, u) of the input of every ReLU layer over the boxes [lower, upper] (B, ...)."""
        return interval_pass(self, lower, upper)[0]

    def crown_bounds(self, lower: torch.Tensor, upper: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Differentiable CROWN: (l, u) of the input of every ReLU layer, intersected with IBP's (B, ...).

        Each ReLU input is bounded by back-substitution to the input box through the earlier layers, whose
        ReLUs are relaxed with the triangle's upper line and CROWN's adaptive lower slope. Dense, Affine and
        Flatten layers only (a convolution raises UnsupportedLayerError); for training, not proof.
        """
        if not self.template.is_chain:
            raise UnsupportedLayerError("the CROWN stability loss supports chains of layers, not graphs (use the IBP loss)")
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
            layer = self.layer(index)
            if isinstance(layer, Dense):
                constant = constant + rows @ layer.bias
                rows = rows @ layer.weight
            elif isinstance(layer, Affine):
                constant = constant + rows @ layer.shift.flatten()
                rows = rows * layer.scale.flatten()
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
        dtype = self.template.dtype
        layers = list(self.template.layers)
        with torch.no_grad():
            for index, layer in enumerate(layers):
                if isinstance(layer, (Dense, Conv2d)) or str(index) in self.scales:
                    live = self.layer(index)
                    if isinstance(live, Affine):
                        layers[index] = Affine(live.scale.detach().to(dtype).clone(),
                                               live.shift.detach().to(dtype).clone())
                    else:
                        layers[index] = replace(live, weight=live.weight.detach().to(dtype).clone(),
                                                bias=live.bias.detach().to(dtype).clone())
        return self.template.with_layers(layers)


def interval_pass(module: NetworkModule, lower: torch.Tensor, upper: torch.Tensor):
    """Differentiable IBP (center-radius form, Gowal et al. 2018), not widened for rounding.

    Returns the (l, u) of every ReLU input and the (center, radius) of each input of the last layer.
    """
    network = module.template
    values = [((lower + upper) / 2, (upper - lower) / 2)]
    pre = []
    for index, (layer, sources) in enumerate(zip(network.layers, network.inputs)):
        xs = [values[j + 1] for j in sources]
        if isinstance(layer, ReLU):
            center, radius = xs[0]
            pre.append((center - radius, center + radius))
        values.append(interval_step(module.layer(index), *xs))
    return pre, [values[j + 1] for j in network.inputs[-1]]


def interval_step(layer: Layer, *xs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer of interval arithmetic in center-radius form, on the (center, radius) of each input."""
    center, radius = xs[0]
    if isinstance(layer, Dense):
        return F.linear(center, layer.weight, layer.bias), F.linear(radius, layer.weight.abs())
    if isinstance(layer, Conv2d):
        args = (layer.stride, layer.padding, layer.dilation, layer.groups)
        return F.conv2d(center, layer.weight, layer.bias, *args), F.conv2d(radius, layer.weight.abs(), None, *args)
    if isinstance(layer, Affine):
        return center * layer.scale + layer.shift, radius * layer.scale.abs()
    if layer.kind == "add":
        return xs[0][0] + xs[1][0], xs[0][1] + xs[1][1]
    if layer.kind == "concat":
        return layer.forward(*(c for c, _ in xs)), layer.forward(*(r for _, r in xs))
    if layer.kind in ("flatten", "reshape", "transpose", "pad"):
        return layer.forward(center), layer.forward(radius)
    lo, hi = center - radius, center + radius  # ReLU and max pool: monotone, applied to both ends
    lo, hi = (torch.relu(lo), torch.relu(hi)) if isinstance(layer, ReLU) else (layer.forward(lo), layer.forward(hi))
    return (lo + hi) / 2, (hi - lo) / 2


def unit_affines(network: Network) -> dict[int, tuple[int, ...]]:
    """Affines between a prunable layer's producer and its ReLU that hold one scale and shift per unit
    (BatchNorm in eval form), by layer index, with the unit shape they act on."""
    shapes = network.shapes()
    found = {}
    for info in prunable_layers(network):
        for index in range(info.producer + 1, info.relu):
            layer = network.layers[index]
            if not isinstance(layer, Affine) or shapes[index] != info.unit_shape:
                continue
            scale, shift = layer.scale.reshape(info.size, -1), layer.shift.reshape(info.size, -1)
            if bool((scale == scale[:, :1]).all()) and bool((shift == shift[:, :1]).all()):
                found[index] = info.unit_shape
    return found
