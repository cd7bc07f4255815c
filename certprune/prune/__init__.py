"""Pruning for verifiability: importance criteria, physical removal of units, fine-tuning, one ``prune`` call."""
from certprune.prune.dataset import PruneData, as_prune_data, load_data, predict, task_loss
from certprune.prune.importance import (
    CRITERIA, SNIP, BatchNormScale, Importance, Magnitude, Random, Stability, Taylor, criterion,
    global_magnitude_masks, select_units,
)
from certprune.prune.metrics import accuracy, certified, flops, margin_spec, parameter_count, unstable_neurons
from certprune.prune.module import NetworkModule
from certprune.prune.pipeline import UNSTRUCTURED, PruneResult, Stats, measure, prune
from certprune.prune.structure import PrunableLayer, prunable_layers
from certprune.prune.surgery import (
    apply_weight_masks, dead_units, mask_units, mean_fill, prune_dead, remove_units,
)
from certprune.prune.train import (
    FinetuneSettings, PruningRun, Schedule, finetune, pgd_attack, prune_units, prune_weights, stability_loss,
)

__all__ = [
    "CRITERIA", "SNIP", "UNSTRUCTURED", "BatchNormScale", "FinetuneSettings", "Importance", "Magnitude",
    "NetworkModule", "PrunableLayer", "PruneData", "as_prune_data", "PruneResult", "PruningRun", "Random", "Schedule", "Stability",
    "Stats", "Taylor", "accuracy", "apply_weight_masks", "certified", "criterion", "dead_units", "finetune",
    "flops", "global_magnitude_masks", "load_data", "margin_spec", "mask_units", "mean_fill", "measure",
    "parameter_count", "pgd_attack", "predict", "prunable_layers", "prune", "prune_dead", "prune_units",
    "prune_weights", "remove_units", "select_units", "stability_loss", "task_loss", "unstable_neurons",
]
