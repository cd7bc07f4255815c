"""Importance criteria: one class per criterion, each scoring every unit of every prunable layer.

A criterion's one method, ``scores(network, data)``, returns one tensor per prunable layer (see
``structure.prunable_layers``: hidden Dense neurons and Conv2d channels, never the output layer) with one
score per unit. Low scores are pruned first. ``select_units`` turns scores into removal masks.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Mapping, Sequence

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from certprune.bounds import CROWN, IBP, BoundMethod
from certprune.errors import CertpruneError
from certprune.network import Conv2d, Dense, Network
from certprune.prune.dataset import PruneData, task_loss
from certprune.prune.module import NetworkModule
from certprune.prune.robust import NRS_C, nrs
from certprune.prune.structure import LINEAR, PrunableLayer, per_unit, prunable_layers

Scores = list[torch.Tensor]


class Importance(ABC):
    """A pruning criterion. Subclasses set ``name`` and implement ``scores``."""

    name: ClassVar[str] = ""

    @abstractmethod
    def scores(self, network: Network, data: PruneData | None) -> Scores:
        """One score per unit for each prunable layer, in network order; low = prune first."""


def _needs(data: PruneData | None, name: str) -> PruneData:
    if data is None or len(data) == 0:
        raise CertpruneError(f"the {name} criterion needs data (samples with labels)")
    return data


@dataclass(frozen=True)
class Magnitude(Importance):
    """L1 norm of a unit's incoming weights: a Dense row, or a Conv2d filter (Li et al. 2017)."""

    name: ClassVar[str] = "magnitude"

    def scores(self, network: Network, data: PruneData | None = None) -> Scores:
        return [network.layers[info.producer].weight.abs().reshape(info.size, -1).sum(dim=1)
                for info in prunable_layers(network)]


@dataclass(frozen=True)
class Random(Importance):
    """Uniform random scores from a seeded generator: the baseline every criterion must beat."""

    seed: int = 0
    name: ClassVar[str] = "random"

    def scores(self, network: Network, data: PruneData | None = None) -> Scores:
        generator = torch.Generator().manual_seed(self.seed)
        return [torch.rand(info.size, generator=generator) for info in prunable_layers(network)]


@dataclass(frozen=True)
class Taylor(Importance):
    """First-order Taylor estimate of the loss change (Molchanov et al. 2017).

    Per sample, |mean over a unit's positions of activation * dLoss/dactivation| at its ReLU output; then
    the mean over samples (the first ``samples`` of the data).
    """

    samples: int = 1024
    batch_size: int = 256
    name: ClassVar[str] = "taylor"

    def scores(self, network: Network, data: PruneData | None) -> Scores:
        data = _needs(data, self.name).take(self.samples)
        infos = prunable_layers(network)
        module = NetworkModule(network)
        totals = [torch.zeros(info.size) for info in infos]
        for start in range(0, len(data), self.batch_size):
            x, y = data.x[start: start + self.batch_size], data.y[start: start + self.batch_size]
            logits, relus = module.trace(x.to(torch.float32))
            outputs = [relus[info.relu_ordinal] for info in infos]
            grads = torch.autograd.grad(task_loss(logits, y, reduction="sum"), outputs)
            for total, info, a, g in zip(totals, infos, outputs, grads):
                total += per_unit((a * g).detach(), info).mean(dim=2).abs().sum(dim=0)
        return [total / len(data) for total in totals]


@dataclass(frozen=True)
class SNIP(Importance):
    """Connection sensitivity |w * dLoss/dw| (Lee et al. 2019) summed over a unit's incoming weights and bias."""

    samples: int = 1024
    batch_size: int = 256
    name: ClassVar[str] = "snip"

    def scores(self, network: Network, data: PruneData | None) -> Scores:
        data = _needs(data, self.name).take(self.samples)
        infos = prunable_layers(network)
        module = NetworkModule(network)
        params = [(module.weights[str(i.producer)], module.biases[str(i.producer)]) for i in infos]
        grads = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in params]
        for start in range(0, len(data), self.batch_size):
            x, y = data.x[start: start + self.batch_size], data.y[start: start + self.batch_size]
            loss = task_loss(module(x.to(torch.float32)), y, reduction="sum") / len(data)
            flat = torch.autograd.grad(loss, [t for pair in params for t in pair])
            for k in range(len(params)):
                grads[k][0].add_(flat[2 * k])
                grads[k][1].add_(flat[2 * k + 1])
        return [((w * gw).abs().reshape(info.size, -1).sum(dim=1) + (b * gb).abs()).detach()
                for info, (w, b), (gw, gb) in zip(infos, params, grads)]


@dataclass(frozen=True)
class BatchNormScale(Importance):
    """Network slimming (Liu et al. 2017): |gamma| of the BatchNorm after a unit's producer.

    Loading folds BatchNorm into the weights, so gamma is no longer in the Network. It comes from
    ``gammas`` (keyed by the producer's position among the network's Dense/Conv2d layers, as read by
    ``from_onnx`` or ``from_torch`` before folding), else from an Affine kept between producer and ReLU
    (its mean |scale| per unit). A prunable layer with neither is an error, not a silent fallback.
    """

    gammas: Mapping[int, torch.Tensor] = field(default_factory=lambda: MappingProxyType({}))
    fallback: Importance | None = None
    name: ClassVar[str] = "slimming"

    @classmethod
    def from_onnx(cls, path: str | Path, fallback: Importance | None = None) -> "BatchNormScale":
        """The BatchNormalization scales of an ONNX file, keyed by the Gemm/MatMul/Conv before each."""
        graph = onnx.load(str(path)).graph
        constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        gammas, linear = {}, 0
        for node in graph.node:
            if node.op_type in ("Gemm", "MatMul", "Conv"):
                linear += 1
            elif node.op_type == "BatchNormalization" and linear > 0:
                if node.input[1] not in constants:
                    raise CertpruneError(f"{path}: BatchNormalization '{node.name}' has no constant scale")
                gammas[linear - 1] = torch.tensor(constants[node.input[1]], dtype=torch.float32)
        return cls(MappingProxyType(gammas), fallback)

    @classmethod
    def from_torch(cls, module: nn.Module, fallback: Importance | None = None) -> "BatchNormScale":
        """The BatchNorm weights of a torch model, keyed by the Linear/Conv2d before each."""
        gammas, linear = {}, 0
        for child in module.modules():
            if isinstance(child, (nn.Linear, nn.Conv2d)):
                linear += 1
            elif isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)) and linear > 0 and child.affine:
                gammas[linear - 1] = child.weight.detach().to(torch.float32).clone()
        return cls(MappingProxyType(gammas), fallback)

    def scores(self, network: Network, data: PruneData | None = None) -> Scores:
        infos = prunable_layers(network)
        missing = [not has_scale(network, info, self.gammas) for info in infos]
        backup = self.fallback.scores(network, data) if self.fallback is not None and any(missing) else None
        return [backup[k] if missing[k] and backup is not None else unit_scale(network, info, self.gammas, self.name)
                for k, info in enumerate(infos)]


def restrict(criterion: Importance, network: Network, kept: Sequence[torch.Tensor]) -> Importance:
    """The criterion for ``network`` after surgery kept units ``kept[k]`` of each prunable layer k (indices in
    ``network``): BatchNorm scales held by the criterion are sliced to match; other criteria are unchanged."""
    gammas = getattr(criterion, "gammas", None)
    if not gammas:
        return criterion
    sliced = dict(gammas)
    for info, keep in zip(prunable_layers(network), kept):
        ordinal = _linear_ordinal(network, info)
        if ordinal in sliced:
            sliced[ordinal] = torch.as_tensor(sliced[ordinal]).reshape(-1)[keep]
    return replace(criterion, gammas=MappingProxyType(sliced))


def _linear_ordinal(network: Network, info: PrunableLayer) -> int:
    return sum(1 for layer in network.layers[: info.producer] if isinstance(layer, LINEAR))


def _affines_before_relu(network: Network, info: PrunableLayer) -> list:
    return [network.layers[i] for i in range(info.producer + 1, info.relu) if network.layers[i].kind == "affine"]


def has_scale(network: Network, info: PrunableLayer, gammas: Mapping[int, torch.Tensor]) -> bool:
    """Whether a BatchNorm scale is known for the units of ``info`` (see ``unit_scale``)."""
    return _linear_ordinal(network, info) in gammas or bool(_affines_before_relu(network, info))


def unit_scale(network: Network, info: PrunableLayer, gammas: Mapping[int, torch.Tensor],
               who: str) -> torch.Tensor:
    """|BatchNorm scale| per unit of a prunable layer, from ``gammas`` or an Affine before its ReLU."""
    ordinal = _linear_ordinal(network, info)
    if ordinal in gammas:
        gamma = torch.as_tensor(gammas[ordinal]).abs().reshape(-1)
        if gamma.numel() != info.size:
            raise CertpruneError(f"{who}: BatchNorm scale for linear layer {ordinal} has {gamma.numel()} "
                                 f"values; layer {info.producer} has {info.size} units")
        return gamma.to(torch.float32)
    affines = _affines_before_relu(network, info)
    if affines:
        return per_unit(affines[-1].scale.abs()[None], info)[0].mean(dim=1).to(torch.float32)
    raise CertpruneError(
        f"{who}: no BatchNorm scale for layer {info.producer} (linear layer {ordinal}); loading folds BatchNorm "
        "into the weights, so give the scales with BatchNormScale.from_onnx(path) or .from_torch(module)")


@dataclass(frozen=True)
class Stability(Importance):
    """ReLU instability over the data's L-inf boxes, from sound bounds (CROWN by default).

    On each box a unit position with pre-activation bounds l, u gets tanh(1 + l * u), the negated RS loss
    of Xiao et al. (2019): near -1 for a very unstable ReLU (l << 0 << u), above tanh(1) for a stable
    active one. A position stably inactive on the box gets -2: removing it is exact there. The score is the
    mean over positions and boxes, so the least stable units are pruned first. Where a BatchNorm scale is known
    (``gammas`` as in BatchNormScale, or an Affine before the ReLU) l and u are first divided by |gamma|,
    comparing units at the scale before BatchNorm.
    """

    method: BoundMethod | None = None
    samples: int = 256
    gammas: Mapping[int, torch.Tensor] = field(default_factory=lambda: MappingProxyType({}))
    name: ClassVar[str] = "stability"

    def scores(self, network: Network, data: PruneData | None) -> Scores:
        data = _needs(data, self.name).take(self.samples)
        lower, upper = data.boxes()
        bounds = (self.method or CROWN()).compute(network, lower, upper)
        result = []
        for info in prunable_layers(network):
            lo = per_unit(bounds.pre_lower[info.relu_ordinal], info)
            hi = per_unit(bounds.pre_upper[info.relu_ordinal], info)
            if has_scale(network, info, self.gammas):
                scale = unit_scale(network, info, self.gammas, self.name).clamp_min(1e-12)[None, :, None]
                lo, hi = lo / scale, hi / scale
            value = torch.where(hi <= 0, torch.full_like(lo, -2.0), torch.tanh(1 + lo * hi))
            result.append(value.mean(dim=(0, 2)).to(torch.float32))
        return result


@dataclass(frozen=True)
class NRS(Importance):
    """Neuron-stability pruning of Li et al. (2023): the units with the most unstable ReLUs go first.

    On each box a unit position with pre-activation bounds l, u has NRS = -tanh(1 + l u / (gamma^2 + c))
    (``robust.nrs``; gamma the unit's BatchNorm scale, as in ``Stability``, else 1); a unit's score is minus
    the mean NRS over its positions and the boxes. Unlike ``Stability`` a stably inactive unit counts as stable
    (l u > 0) and is kept, as in the reference. Bounds are IBP's by default (the reference's); the reference
    ranks channels globally (``Schedule(scope="global")``).
    """

    method: BoundMethod | None = None
    samples: int = 256
    c: float = NRS_C
    gammas: Mapping[int, torch.Tensor] = field(default_factory=lambda: MappingProxyType({}))
    name: ClassVar[str] = "nrs"

    def scores(self, network: Network, data: PruneData | None) -> Scores:
        data = _needs(data, self.name).take(self.samples)
        lower, upper = data.boxes()
        bounds = (self.method or IBP()).compute(network, lower, upper)
        result = []
        for info in prunable_layers(network):
            lo = per_unit(bounds.pre_lower[info.relu_ordinal], info)
            hi = per_unit(bounds.pre_upper[info.relu_ordinal], info)
            gamma = None
            if has_scale(network, info, self.gammas):
                gamma = unit_scale(network, info, self.gammas, self.name).to(lo.dtype)[None, :, None]
            result.append(-nrs(lo, hi, gamma, self.c).mean(dim=(0, 2)).to(torch.float32))
        return result


CRITERIA: Mapping[str, type[Importance]] = MappingProxyType({
    cls.name: cls for cls in (Magnitude, Random, Taylor, SNIP, BatchNormScale, Stability, NRS)})


def criterion(name: str) -> Importance:
    """The criterion called ``name`` with its default settings."""
    if name not in CRITERIA:
        raise CertpruneError(f"unknown pruning criterion {name!r}; expected one of {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]()


def select_units(network: Network, scores: Scores, sparsity: float, scope: str = "layer",
                 original_sizes: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Removal masks for the lowest-scoring units so that a ``sparsity`` share is gone; each layer keeps one.

    ``layer``: each layer ends with ``round(sparsity * size)`` units removed; ``global``: ``round(sparsity *
    total)`` across layers by raw score (meaningful when scores compare across layers). Sizes are the current
    ones, or ``original_sizes`` in iterative pruning, where units removed in earlier rounds count. Ties go
    to the lower index.
    """
    infos = prunable_layers(network)
    _check_sparsity(sparsity)
    if len(scores) != len(infos) or any(tuple(s.shape) != (i.size,) for s, i in zip(scores, infos)):
        raise CertpruneError(f"scores have shapes {[tuple(s.shape) for s in scores]}; the network's prunable "
                             f"layers have {[i.size for i in infos]} units")
    sizes = [i.size for i in infos] if original_sizes is None else list(original_sizes)
    gone = [n - i.size for n, i in zip(sizes, infos)]
    if scope == "layer":
        masks = []
        for s, info, n, g in zip(scores, infos, sizes, gone):
            mask = torch.zeros(info.size, dtype=torch.bool)
            count = max(0, min(round(sparsity * n) - g, info.size - 1))
            mask[torch.argsort(s, stable=True)[:count]] = True
            masks.append(mask)
        return masks
    if scope != "global":
        raise CertpruneError(f"unknown pruning scope {scope!r}; expected 'layer' or 'global'")
    return _select_global(scores, infos, max(0, round(sparsity * sum(sizes)) - sum(gone)))


def _select_global(scores: Scores, infos, count: int) -> list[torch.Tensor]:
    masks = [torch.zeros(info.size, dtype=torch.bool) for info in infos]
    left = [info.size for info in infos]
    owner = torch.cat([torch.full((i.size,), k) for k, i in enumerate(infos)])
    local = torch.cat([torch.arange(i.size) for i in infos])
    for position in torch.argsort(torch.cat([s.to(torch.float64) for s in scores]), stable=True).tolist():
        if count == 0:
            break
        k = int(owner[position])
        if left[k] > 1:
            masks[k][int(local[position])] = True
            left[k] -= 1
            count -= 1
    return masks


def _check_sparsity(sparsity: float) -> None:
    if not (isinstance(sparsity, (int, float)) and 0.0 <= sparsity < 1.0 and math.isfinite(sparsity)):
        raise CertpruneError(f"sparsity must be in [0, 1), got {sparsity!r}")


def global_magnitude_masks(network: Network, sparsity: float, include_output: bool = True) -> dict[int, torch.Tensor]:
    """Unstructured baseline: keep-masks (layer index -> bool, weight-shaped) zeroing the ``sparsity`` share
    of smallest |w| over all Dense/Conv2d weights together (biases are kept). Already-zero weights go first."""
    _check_sparsity(sparsity)
    linear = [i for i, layer in enumerate(network.layers) if isinstance(layer, (Dense, Conv2d))]
    if not include_output:
        linear = linear[:-1]
    flat = torch.cat([network.layers[i].weight.abs().reshape(-1).to(torch.float64) for i in linear])
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[: round(sparsity * flat.numel())]] = False
    masks, start = {}, 0
    for i in linear:
        weight = network.layers[i].weight
        masks[i] = keep[start: start + weight.numel()].reshape(weight.shape)
        start += weight.numel()
    return masks
