"""Fine-tuning a Network, optionally with the ReLU-stability regulariser and PGD, and iterative pruning.

The stability regulariser is the RS loss of Xiao et al. (2019): the mean over ReLU neurons and training
boxes of -tanh(1 + l * u), with l, u interval (IBP) bounds of the neuron's input on the box ``[x - eps,
x + eps]``; it is near +1 for an unstable neuron and below -tanh(1) for a stable one. The bounds are the
module's own differentiable IBP or CROWN (``NetworkModule.interval_bounds`` / ``crown_bounds``, dense
networks), since ``certprune.bounds`` computes sound bounds without autograd through the weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from certprune.errors import CertpruneError
from certprune.network import Network
from certprune.prune.dataset import PruneData, task_loss
from certprune.prune.importance import Importance, global_magnitude_masks, restrict, select_units
from certprune.prune.module import NetworkModule
from certprune.prune.structure import prunable_layers
from certprune.prune.surgery import apply_weight_masks, mean_fill, remove_units


RS_BOUNDS = ("ibp", "crown")


@dataclass(frozen=True, kw_only=True)
class FinetuneSettings:
    """Adam on the task loss (+ ``rs_lambda`` * RS loss at the data's eps; PGD examples when ``pgd_steps``),
    the first layer preconditioned by the widths of its inputs (see ``input_widths``)."""

    epochs: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    rs_lambda: float = 0.0
    rs_bounds: str = "ibp"  # the bounds of the RS loss: ibp, or crown (dense networks)
    pgd_steps: int = 0
    pgd_step_size: float | None = None  # a fraction of the box radius per step; default 2.5 / pgd_steps
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "pgd_steps"):
            if getattr(self, name) < (1 if name == "batch_size" else 0):
                raise CertpruneError(f"fine-tuning {name} must be {'positive' if name == 'batch_size' else '>= 0'}, "
                                     f"got {getattr(self, name)}")
        if self.rs_bounds not in RS_BOUNDS:
            raise CertpruneError(f"unknown RS bounds {self.rs_bounds!r}; expected one of {', '.join(RS_BOUNDS)}")
        if self.lr <= 0 or self.rs_lambda < 0 or self.weight_decay < 0:
            raise CertpruneError(f"fine-tuning needs lr > 0, rs_lambda >= 0 and weight_decay >= 0; got lr={self.lr}, "
                                 f"rs_lambda={self.rs_lambda}, weight_decay={self.weight_decay}")


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Iterative pruning: ``rounds`` rounds, each removing the same share of what is left (ending at the
    target), each followed by fine-tuning; ``rewind`` restarts every round's fine-tuning from the survivors'
    weights in the input network (weight rewinding). ``scope``: 'layer' or 'global' selection; ``fold_mean``:
    fold removed units' mean activation over the data into the next bias."""

    rounds: int = 1
    rewind: bool = False
    scope: str = "layer"
    fold_mean: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise CertpruneError(f"rounds must be >= 1, got {self.rounds}")
        if self.scope not in ("layer", "global"):
            raise CertpruneError(f"unknown pruning scope {self.scope!r}; expected 'layer' or 'global'")

    def targets(self, sparsity: float) -> list[float]:
        """Cumulative sparsity after each round: 1 - (1 - s)^(r / rounds)."""
        return [1 - (1 - sparsity) ** (r / self.rounds) for r in range(1, self.rounds + 1)]


def stability_loss(module: NetworkModule, lower: torch.Tensor, upper: torch.Tensor,
                   bounds: str = "ibp") -> torch.Tensor:
    """RS loss: mean over ReLU neurons and boxes of -tanh(1 + l * u) (IBP or CROWN bounds, differentiable)."""
    pre = module.crown_bounds(lower, upper) if bounds == "crown" else module.interval_bounds(lower, upper)
    terms = [-torch.tanh(1 + lo * hi).flatten(1) for lo, hi in pre]
    return torch.cat(terms, dim=1).mean() if terms else torch.zeros(())


def pgd_attack(module: NetworkModule, x: torch.Tensor, y: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
               steps: int, step_size: float, generator: torch.Generator) -> torch.Tensor:
    """Madry et al. (2018) PGD from a random start in each box; steps are ``step_size`` times the radius."""
    step = step_size * (upper - lower) / 2
    x_adv = lower + torch.rand(x.shape, generator=generator) * (upper - lower)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(task_loss(module(x_adv), y), x_adv)
        x_adv = torch.minimum(torch.maximum(x_adv.detach() + step * grad.sign(), lower), upper)
    return x_adv.detach()


def finetune(network: Network, data: PruneData, settings: FinetuneSettings,
             weight_masks: Mapping[int, torch.Tensor] | None = None) -> Network:
    """Train ``network`` on ``data`` for ``settings.epochs``; masked weights stay exactly zero."""
    if settings.epochs == 0:
        return network
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    module = NetworkModule(network, weight_masks, input_widths(network, data))
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    step_size = settings.pgd_step_size or 2.5 / max(settings.pgd_steps, 1)
    x_all, y_all = data.x.to(torch.float32), data.y
    for _ in range(settings.epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), settings.batch_size):
            rows = order[start: start + settings.batch_size]
            x, y = x_all[rows], y_all[rows]
            lower, upper = data.boxes(x)
            if settings.pgd_steps:
                x = pgd_attack(module, x, y, lower, upper, settings.pgd_steps, step_size, generator)
            loss = task_loss(module(x), y)
            if settings.rs_lambda:
                loss = loss + settings.rs_lambda * stability_loss(module, lower, upper, settings.rs_bounds)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return module.to_network()


def input_widths(network: Network, data: PruneData) -> torch.Tensor | None:
    """The width of each input column (per channel: the widest pixel) of the first linear layer: the
    data's input domain carried through the layers before it, else the samples' range; 1 where zero.
    It is the preconditioning ``NetworkModule`` applies to that layer in fine-tuning."""
    first = next((i for i, layer in enumerate(network.layers) if layer.kind in ("dense", "conv2d")), None)
    if first is None or len(data) == 0:
        return None
    if data.lower is not None and data.upper is not None:
        shape = (1, *network.input_shape)
        width = (torch.as_tensor(data.upper) - torch.as_tensor(data.lower)).to(network.dtype).expand(shape)
    else:
        width = (data.x.amax(dim=0) - data.x.amin(dim=0)).to(network.dtype)[None]
    for layer in network.layers[:first]:  # only Affine and Flatten come before the first linear layer
        width = width * layer.scale.abs() if layer.kind == "affine" else layer.forward(width)
    width = width[0].flatten(1).amax(dim=1) if network.layers[first].kind == "conv2d" else width[0]
    return torch.where(width > 0, width, torch.ones_like(width)).to(torch.float32)


@dataclass(frozen=True, eq=False)
class PruningRun:
    """The pruned network; ``removed`` per prunable layer of the input network (structured) or the weight
    keep-masks (unstructured); one record per round."""

    network: Network
    removed: list[torch.Tensor] | None = None
    weight_masks: Mapping[int, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)


def prune_units(network: Network, criterion: Importance, sparsity: float, data: PruneData,
                schedule: Schedule = Schedule(), settings: FinetuneSettings = FinetuneSettings(),
                on_round: Callable[[dict], None] | None = None) -> PruningRun:
    """Structured iterative pruning: score, remove the lowest units, fine-tune; ``rounds`` times."""
    sizes = [info.size for info in prunable_layers(network)]
    kept = [torch.arange(n) for n in sizes]  # surviving units, numbered as in the input network
    current, history = network, []
    for r, target in enumerate(schedule.targets(sparsity), 1):
        scores = restrict(criterion, network, kept).scores(current, data)
        remove = select_units(current, scores, target, schedule.scope, original_sizes=sizes)
        kept = [k[~m] for k, m in zip(kept, remove)]
        if schedule.rewind:
            current, remove = network, [_complement(k, n) for k, n in zip(kept, sizes)]
        fill = mean_fill(current, data.x) if schedule.fold_mean else None
        current = finetune(remove_units(current, remove, fill), data, settings)
        history.append({"round": r, "sparsity": target, "units": [len(k) for k in kept],
                        "parameters": current.parameter_count})
        if on_round is not None:
            on_round(history[-1])
    return PruningRun(current, [_complement(k, n) for k, n in zip(kept, sizes)], None, history)


def prune_weights(network: Network, sparsity: float, data: PruneData, schedule: Schedule = Schedule(),
                  settings: FinetuneSettings = FinetuneSettings(),
                  on_round: Callable[[dict], None] | None = None) -> PruningRun:
    """Unstructured iterative global magnitude pruning: masks (not surgery), kept during fine-tuning."""
    current, masks, history = network, None, []
    for r, target in enumerate(schedule.targets(sparsity), 1):
        new = global_magnitude_masks(current, target)
        masks = new if masks is None else {i: m & masks[i] for i, m in new.items()}
        start = network if schedule.rewind else current
        current = finetune(apply_weight_masks(start, masks), data, settings, masks)
        kept = sum(int(m.sum()) for m in masks.values())
        history.append({"round": r, "sparsity": target, "weights": kept})
        if on_round is not None:
            on_round(history[-1])
    return PruningRun(current, None, masks, history)


def _complement(kept: torch.Tensor, size: int) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[kept] = False
    return mask
