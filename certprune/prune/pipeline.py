"""``prune``: score, remove, train and measure before, after and at every round, in one call."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from certprune.bounds import CROWN, BoundMethod
from certprune.errors import CertpruneError
from certprune.network import Network
from certprune.prune.batchnorm import fold_unit_scales
from certprune.prune.dataset import PruneData, as_prune_data
from certprune.prune.importance import Importance, criterion
from certprune.prune.metrics import accuracy, flops, margin_spec, parameter_count
from certprune.prune.checkpoint import Checkpoint
from certprune.prune.rounds import EpochHook, PruningRun, Round, Schedule, prune_units, prune_weights
from certprune.prune.train import FinetuneSettings

UNSTRUCTURED = "unstructured"


@dataclass(frozen=True)
class Stats:
    """One network's measurements: nonzero parameters and FLOPs, ReLU units, accuracy on the evaluation
    data, and over its first ``boxes`` boxes (at the data's eps) the mean number of unstable ReLUs per box
    and the share of boxes whose label CROWN proves (incomplete: a lower bound of certified accuracy)."""

    parameters: int
    flops: int
    units: int
    accuracy: float
    unstable: float
    boxes: int
    certified: float = math.nan


def measure(network: Network, data: PruneData, boxes: int = 100, method: BoundMethod | None = None) -> Stats:
    """Stats of the network as it would be exported: per-unit scales folded into their layers."""
    network = fold_unit_scales(network)
    sample = data.take(boxes)
    unstable, proven = 0.0, math.nan
    if len(sample):
        lower, upper = sample.boxes()
        C = margin_spec(sample.y, math.prod(network.output_shape))
        bounds = (method or CROWN()).compute(network, lower, upper, C=C)
        unstable = sum(bounds.unstable_counts()) / len(sample)
        proven = float((bounds.output_lower > 0).all(dim=1).float().mean())
    return Stats(parameter_count(network), flops(network), network.relu_count, accuracy(network, data),
                 unstable, len(sample), proven)


@dataclass(frozen=True, eq=False)
class PruneResult:
    """The pruned network, how it was made, and the measurements before, after and per round.

    ``compression_ratio`` and ``speedup`` follow ShrinkBench: the original's parameters (FLOPs) over the
    pruned network's nonzero parameters (FLOPs). ``rounds`` pairs each round (round 0: the trained dense
    network, when the schedule trains it) with its measurements.
    """

    network: Network
    method: str
    sparsity: float
    before: Stats
    after: Stats
    run: PruningRun = field(repr=False)
    rounds: list[tuple[Round, Stats]] = field(default_factory=list, repr=False)

    @property
    def compression_ratio(self) -> float:
        return self.before.parameters / max(self.after.parameters, 1)

    @property
    def speedup(self) -> float:
        return self.before.flops / max(self.after.flops, 1)


def prune(network: Network, method: str | Importance, sparsity: float, data: PruneData, *,
          schedule: Schedule = Schedule(), finetune: FinetuneSettings = FinetuneSettings(),
          eval_data: PruneData | None = None, eval_boxes: int = 100,
          on_round: Callable[[Round, Stats], None] | None = None, checkpoint: Checkpoint | None = None,
          on_epoch: EpochHook | None = None) -> PruneResult:
    """Prune ``network`` to ``sparsity`` by ``method`` and measure it before, after and at every round.

    ``method``: an Importance, a criterion name (magnitude, random, taylor, snip, slimming, stability, nrs:
    ``sparsity`` is the share of hidden units removed by surgery), or ``"unstructured"`` (global weight
    magnitude masks: ``sparsity`` is the share of Dense/Conv2d weights zeroed). ``data`` scores and
    trains; ``eval_data`` (default ``data``) measures, its eps sets the boxes. Both may be PruneData, an
    ``(x, y)`` pair of arrays or tensors, or a DataLoader. ``on_round(round, stats)`` sees every round
    (a resumed run's finished ones too); ``checkpoint`` keeps each finished round, and the run continues after
    the last one it holds; ``on_epoch(round, epoch, epochs, mean loss)`` hears of every epoch of training.
    """
    data = as_prune_data(data)
    eval_data = data if eval_data is None else as_prune_data(eval_data)
    before = measure(network, eval_data, eval_boxes)
    rounds: list[tuple[Round, Stats]] = []

    def record(round_: Round) -> None:
        rounds.append((round_, measure(round_.network, eval_data, eval_boxes)))
        if on_round is not None:
            on_round(*rounds[-1])

    if method == UNSTRUCTURED:
        run = prune_weights(network, sparsity, data, schedule, finetune, record, checkpoint, on_epoch)
        name = UNSTRUCTURED
    else:
        chosen = criterion(method) if isinstance(method, str) else method
        if not isinstance(chosen, Importance):
            raise CertpruneError(f"method must be a criterion name, '{UNSTRUCTURED}' or an Importance; got {method!r}")
        run = prune_units(network, chosen, sparsity, data, schedule, finetune, record, checkpoint, on_epoch)
        name = chosen.name
    return PruneResult(run.network, name, sparsity, before, rounds[-1][1], run, rounds)
