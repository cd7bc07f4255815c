"""Iterative pruning in rounds: score, remove, rewind, train; structured (surgery) or unstructured (masks).

The lottery-ticket protocol of the certified-pruning reference (Frankle and Carbin 2019; Li et al. 2023):
start from a seeded random initialisation of the architecture (or the model's own weights), train the dense
network (round 0), then each round remove a share of what is left (11% of the units, or 20% of the weights,
ranked globally), rewind the survivors to their starting weights and train again. Every round's network is
kept in the run's history, so one run gives a whole sparsity curve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Mapping

import torch

from certprune.errors import CertpruneError
from certprune.network import Conv2d, Dense, Network
from certprune.prune.checkpoint import Checkpoint, RoundState
from certprune.prune.dataset import PruneData
from certprune.prune.importance import Importance, global_magnitude_masks, restrict, select_units
from certprune.prune.module import unit_affines
from certprune.prune.structure import prunable_layers
from certprune.prune.surgery import apply_weight_masks, mean_fill, remove_units
from certprune.prune.train import FinetuneSettings, finetune, input_widths

INITS = ("model", "random")
EpochHook = Callable[[int, int, int, float], None]  # (round, epoch, epochs, mean loss); round 0 is the dense one


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """How the target sparsity is reached.

    ``rounds`` rounds removing the same share of what is left, or, with ``rate``, rounds removing ``rate`` of
    what is left, as many as come nearest to the target (the last round lands on it). ``init``: start from the model's
    weights, or from a random initialisation of its architecture (seeded by the fine-tuning seed; a random
    start needs training before the first scoring, so ``train_dense`` is implied). ``train_dense``: train the
    unpruned network first (round 0) and score that. ``rewind``: every round trains the survivors from their
    starting weights (those of round 0's start) instead of continuing from the last round. ``scope``: 'layer'
    or 'global' selection; ``fold_mean``: fold removed units' mean activation into the next bias.
    """

    rounds: int = 1
    rate: float | None = None
    init: str = "model"
    train_dense: bool = False
    rewind: bool = False
    scope: str = "layer"
    fold_mean: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise CertpruneError(f"rounds must be >= 1, got {self.rounds}")
        if self.rate is not None and not 0 < self.rate < 1:
            raise CertpruneError(f"the pruning rate per round must be in (0, 1), got {self.rate}")
        if self.scope not in ("layer", "global"):
            raise CertpruneError(f"unknown pruning scope {self.scope!r}; expected 'layer' or 'global'")
        if self.init not in INITS:
            raise CertpruneError(f"unknown initialisation {self.init!r}; expected one of {', '.join(INITS)}")

    @property
    def dense_round(self) -> bool:
        return self.train_dense or self.init == "random"

    def targets(self, sparsity: float) -> list[float]:
        """Cumulative sparsity after each round: 1 - (1 - s)^(r / rounds), or 1 - (1 - rate)^r up to s."""
        if self.rate is None:
            return [1 - (1 - sparsity) ** (r / self.rounds) for r in range(1, self.rounds + 1)]
        if sparsity <= 0:
            return [sparsity]
        # As many rounds as the rate takes to the target, the nearest whole number; the last lands on it.
        count = max(1, round(math.log(1 - sparsity) / math.log(1 - self.rate)))
        return [1 - (1 - self.rate) ** r for r in range(1, count)] + [sparsity]


@dataclass(frozen=True, eq=False)
class Round:
    """One round's result: its target sparsity, the surviving units per prunable layer (structured) or kept
    weights (unstructured), and the trained network (round 0 is the dense one)."""

    index: int
    sparsity: float
    network: Network
    units: list[int] | None = None
    weights: int | None = None

    @property
    def parameters(self) -> int:
        return self.network.parameter_count


@dataclass(frozen=True, eq=False)
class PruningRun:
    """The pruned network; ``removed`` per prunable layer of the input network (structured) or the weight
    keep-masks (unstructured); one record per round."""

    network: Network
    removed: list[torch.Tensor] | None = None
    weight_masks: Mapping[int, torch.Tensor] | None = None
    history: list[Round] = field(default_factory=list)


def initialise(network: Network, data: PruneData, seed: int) -> Network:
    """The architecture of ``network`` with fresh weights: torch's default for Linear and Conv2d
    (uniform in +-1/sqrt(fan_in), weights and biases), the first layer's divided by its inputs' widths so
    raw features start at the scale of unit-width ones; per-unit scales start at 1 and shifts at 0."""
    generator = torch.Generator().manual_seed(seed)
    widths = input_widths(network, data)
    layers, first = list(network.layers), True
    scales = unit_affines(network)
    for index, layer in enumerate(layers):
        if isinstance(layer, (Dense, Conv2d)):
            bound = 1 / math.sqrt(math.prod(layer.weight.shape[1:]))
            weight = (torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound
            bias = (torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound
            if first and widths is not None:
                weight = weight / widths.reshape((1, -1) + (1,) * (weight.dim() - 2))
            layers[index] = replace(layer, weight=weight.to(layer.weight.dtype), bias=bias.to(layer.bias.dtype))
            first = False
        elif index in scales:
            layers[index] = replace(layer, scale=torch.ones_like(layer.scale), shift=torch.zeros_like(layer.shift))
    return network.with_layers(layers)


def _start(network: Network, data: PruneData, schedule: Schedule, settings: FinetuneSettings,
           weight_masks=None, on_epoch: EpochHook | None = None) -> tuple[Network, Network]:
    """(the rewinding point, the network the first round scores)."""
    start = initialise(network, data, settings.seed) if schedule.init == "random" else network
    if weight_masks is not None:
        start = apply_weight_masks(start, weight_masks)
    trained = _train(start, data, settings, 0, on_epoch, weight_masks) if schedule.dense_round else start
    return start, trained


def prune_units(network: Network, criterion: Importance, sparsity: float, data: PruneData,
                schedule: Schedule = Schedule(), settings: FinetuneSettings = FinetuneSettings(),
                on_round: Callable[[Round], None] | None = None, checkpoint: Checkpoint | None = None,
                on_epoch: EpochHook | None = None) -> PruningRun:
    """Structured iterative pruning: score, remove the lowest units, (rewind,) train; round after round.
    ``checkpoint`` keeps every finished round and, when it holds one, the run continues after it;
    ``on_epoch(round, epoch, epochs, mean loss)`` hears of every epoch of training."""
    sizes = [info.size for info in prunable_layers(network)]
    state = _restored(checkpoint, on_round)
    if state is None:
        kept = [torch.arange(n) for n in sizes]  # surviving units, numbered as in the input network
        start, current = _start(network, data, schedule, settings, on_epoch=on_epoch)
        history: list[Round] = []
        if schedule.dense_round:
            history.append(Round(0, 0.0, current, units=list(sizes)))
            _keep(checkpoint, RoundState(0, start, current, kept, None, list(history)), on_round)
        done = 0
    else:
        kept, start, current, history, done = state.kept, state.start, state.current, list(state.history), state.done
    for r, target in enumerate(schedule.targets(sparsity), 1):
        if r <= done:
            continue
        scores = restrict(criterion, start, kept).scores(current, data)
        remove = select_units(current, scores, target, schedule.scope, original_sizes=sizes)
        kept = [k[~m] for k, m in zip(kept, remove)]
        if schedule.rewind:
            current, remove = start, [_complement(k, n) for k, n in zip(kept, sizes)]
        fill = mean_fill(current, data.x) if schedule.fold_mean else None
        current = _train(remove_units(current, remove, fill), data, settings, r, on_epoch)
        history.append(Round(r, target, current, units=[len(k) for k in kept]))
        _keep(checkpoint, RoundState(r, start, current, kept, None, list(history)), on_round)
    return PruningRun(current, [_complement(k, n) for k, n in zip(kept, sizes)], None, history)


def prune_weights(network: Network, sparsity: float, data: PruneData, schedule: Schedule = Schedule(),
                  settings: FinetuneSettings = FinetuneSettings(),
                  on_round: Callable[[Round], None] | None = None, checkpoint: Checkpoint | None = None,
                  on_epoch: EpochHook | None = None) -> PruningRun:
    """Unstructured iterative global magnitude pruning: masks (not surgery), kept during training.
    ``checkpoint`` and ``on_epoch`` as for ``prune_units``."""
    state = _restored(checkpoint, on_round)
    if state is None:
        start, current = _start(network, data, schedule, settings, on_epoch=on_epoch)
        history: list[Round] = []
        masks = None
        if schedule.dense_round:
            total = sum(int(m.numel()) for m in global_magnitude_masks(current, 0.0).values())
            history.append(Round(0, 0.0, current, weights=total))
            _keep(checkpoint, RoundState(0, start, current, None, None, list(history)), on_round)
        done = 0
    else:
        start, current, masks, history, done = state.start, state.current, state.masks, list(state.history), state.done
    for r, target in enumerate(schedule.targets(sparsity), 1):
        if r <= done:
            continue
        new = global_magnitude_masks(current, target)
        masks = new if masks is None else {i: m & masks[i] for i, m in new.items()}
        begin = start if schedule.rewind else current
        current = _train(apply_weight_masks(begin, masks), data, settings, r, on_epoch, masks)
        history.append(Round(r, target, current, weights=sum(int(m.sum()) for m in masks.values())))
        _keep(checkpoint, RoundState(r, start, current, None, dict(masks), list(history)), on_round)
    return PruningRun(current, None, masks, history)


def _train(network: Network, data: PruneData, settings: FinetuneSettings, index: int,
           on_epoch: EpochHook | None, weight_masks=None) -> Network:
    hook = None if on_epoch is None else partial(on_epoch, index)
    return finetune(network, data, settings, weight_masks, hook)


def _restored(checkpoint: Checkpoint | None, on_round) -> RoundState | None:
    """The state a checkpoint resumes from, its finished rounds announced again; None to start afresh."""
    state = None if checkpoint is None else checkpoint.restored
    if state is not None and on_round is not None:
        for round_ in state.history:
            on_round(round_)
    return state


def _keep(checkpoint: Checkpoint | None, state: RoundState, on_round) -> None:
    """A finished round: first into the checkpoint, then announced (measuring it may be what is interrupted)."""
    if checkpoint is not None:
        checkpoint.save(state)
    if on_round is not None:
        on_round(state.history[-1])


def _complement(kept: torch.Tensor, size: int) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[kept] = False
    return mask
