"""``prune``: score, remove, fine-tune and measure before and after, in one call."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from certprune.bounds import BoundMethod
from certprune.errors import CertpruneError
from certprune.network import Network
from certprune.prune.dataset import PruneData, as_prune_data
from certprune.prune.importance import Importance, criterion
from certprune.prune.metrics import accuracy, flops, parameter_count, unstable_neurons
from certprune.prune.train import FinetuneSettings, PruningRun, Schedule, prune_units, prune_weights

UNSTRUCTURED = "unstructured"


@dataclass(frozen=True)
class Stats:
    """One network's measurements: nonzero parameters and FLOPs, ReLU units, accuracy on the evaluation
    data, and the mean number of unstable ReLUs per box at the data's eps (over ``boxes`` boxes)."""

    parameters: int
    flops: int
    units: int
    accuracy: float
    unstable: float
    boxes: int


def measure(network: Network, data: PruneData, boxes: int = 100, method: BoundMethod | None = None) -> Stats:
    sample = data.take(boxes)
    return Stats(parameter_count(network), flops(network), network.relu_count, accuracy(network, data),
                 unstable_neurons(network, sample, method), len(sample))


@dataclass(frozen=True, eq=False)
class PruneResult:
    """The pruned network, how it was made, and the measurements before and after.

    ``compression_ratio`` and ``speedup`` follow ShrinkBench: the original's parameters (FLOPs) over the
    pruned network's nonzero parameters (FLOPs).
    """

    network: Network
    method: str
    sparsity: float
    before: Stats
    after: Stats
    run: PruningRun = field(repr=False)

    @property
    def compression_ratio(self) -> float:
        return self.before.parameters / max(self.after.parameters, 1)

    @property
    def speedup(self) -> float:
        return self.before.flops / max(self.after.flops, 1)


def prune(network: Network, method: str | Importance, sparsity: float, data: PruneData, *,
          schedule: Schedule = Schedule(), finetune: FinetuneSettings = FinetuneSettings(),
          eval_data: PruneData | None = None, eval_boxes: int = 100,
          on_round: Callable[[dict], None] | None = None) -> PruneResult:
    """Prune ``network`` to ``sparsity`` by ``method`` and measure it before and after.

    ``method``: an Importance, a criterion name (magnitude, random, taylor, snip, slimming, stability:
    ``sparsity`` is the share of hidden units removed by surgery), or ``"unstructured"`` (global weight
    magnitude masks: ``sparsity`` is the share of Dense/Conv2d weights zeroed). ``data`` scores and
    fine-tunes; ``eval_data`` (default ``data``) measures, its eps sets the boxes of the unstable count. Both
    may be PruneData, an ``(x, y)`` pair of arrays or tensors, or a DataLoader.
    """
    data = as_prune_data(data)
    eval_data = data if eval_data is None else as_prune_data(eval_data)
    before = measure(network, eval_data, eval_boxes)
    if method == UNSTRUCTURED:
        run, name = prune_weights(network, sparsity, data, schedule, finetune, on_round), UNSTRUCTURED
    else:
        chosen = criterion(method) if isinstance(method, str) else method
        if not isinstance(chosen, Importance):
            raise CertpruneError(f"method must be a criterion name, '{UNSTRUCTURED}' or an Importance; got {method!r}")
        run, name = prune_units(network, chosen, sparsity, data, schedule, finetune, on_round), chosen.name
    after = measure(run.network, eval_data, eval_boxes)
    return PruneResult(run.network, name, sparsity, before, after, run)
