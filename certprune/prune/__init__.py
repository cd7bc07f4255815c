"""Pruning for verifiability: importance criteria, physical removal of units, training regimes, rounds, ``prune``."""
from certprune.prune.batchnorm import fold_unit_scales, unfold_batchnorm
from certprune.prune.dataset import PruneData, as_prune_data, load_data, predict, task_loss
from certprune.prune.importance import (
    CRITERIA, NRS, SNIP, BatchNormScale, Importance, Magnitude, Random, Stability, Taylor, criterion,
    global_magnitude_masks, select_units,
)
from certprune.prune.metrics import accuracy, certified, flops, margin_spec, parameter_count, unstable_neurons
from certprune.prune.module import NetworkModule
from certprune.prune.pipeline import UNSTRUCTURED, PruneResult, Stats, measure, prune
from certprune.prune.robust import margin_lower_bounds, nrs, nrs_loss, robust_cross_entropy
from certprune.prune.rounds import PruningRun, Round, Schedule, initialise, prune_units, prune_weights
from certprune.prune.structure import PrunableLayer, prunable_layers
from certprune.prune.surgery import (
    apply_weight_masks, dead_units, mask_units, mean_fill, prune_dead, remove_units,
)
from certprune.prune.train import (
    REGIMES, Adversarial, Certified, EpsSchedule, FinetuneSettings, Natural, fgsm_attack, finetune, pgd_attack,
    stability_loss,
)

__all__ = [
    "CRITERIA", "NRS", "REGIMES", "SNIP", "UNSTRUCTURED", "Adversarial", "BatchNormScale", "Certified",
    "EpsSchedule", "FinetuneSettings", "Importance", "Magnitude", "Natural", "NetworkModule", "PrunableLayer",
    "PruneData", "PruneResult", "PruningRun", "Random", "Round", "Schedule", "Stability", "Stats", "Taylor",
    "accuracy", "apply_weight_masks", "as_prune_data", "certified", "criterion", "dead_units", "fgsm_attack",
    "finetune", "flops", "fold_unit_scales", "global_magnitude_masks", "initialise", "load_data", "margin_lower_bounds",
    "margin_spec", "mask_units", "mean_fill", "measure", "nrs", "nrs_loss", "parameter_count", "pgd_attack",
    "predict", "prunable_layers", "prune", "prune_dead", "prune_units", "prune_weights", "remove_units",
    "robust_cross_entropy", "select_units", "stability_loss", "task_loss", "unfold_batchnorm", "unstable_neurons",
]
