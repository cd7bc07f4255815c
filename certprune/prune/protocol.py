"""The certified-pruning reference's protocol as defaults: training settings per regime, rounds per method.

Li et al. (2023) train every regime with Adam or SGD for 200 epochs, eps zero for the first 10, ramped
over the next 81 (5% and 40% of the run), the learning rate divided by 10 at 70% and 85% of it, gradients
clipped to norm 8; NRS pruning always comes with the NRS regulariser (weight 1e-3 with CROWN-IBP, 1e-2 with
adversarial training), network slimming with an L1 weight of 1e-4 on the BatchNorm scales; structured
methods remove 11% of the remaining units per round, unstructured ones 20% of the remaining weights, both
ranked globally, the survivors rewound to their initialisation (``rounds``). Here the epochs are the
caller's (CPU budgets), the shares of the run are the reference's.
"""
from __future__ import annotations

from certprune.errors import CertpruneError
from certprune.prune.rounds import Schedule
from certprune.prune.train import REGIMES, Adversarial, Certified, EpsSchedule, FinetuneSettings, Natural

NRS_WEIGHT = {"natural": 1e-2, "adversarial": 1e-2, "certified": 1e-3}  # natural: the reference has none
SLIM_WEIGHT = 1e-4
RATE = {"structured": 0.11, "unstructured": 0.2}
WARMUP, RAMP = 0.05, 0.4  # shares of the epochs at eps 0 and ramping up
LR_DECAY_AT = (0.7, 0.85)
GRAD_CLIP = 8.0


def regime(train: str, *, bound: str = "crown-ibp", attack: str = "fgsm", steps: int = 10,
           natural_weight: float = 0.0) -> Natural | Adversarial | Certified:
    """The regime called ``train`` (natural, adversarial, certified) with its options."""
    if train not in REGIMES:
        raise CertpruneError(f"unknown training regime {train!r}; expected one of {', '.join(REGIMES)}")
    if train == "adversarial":
        return Adversarial(attack=attack, steps=steps)
    if train == "certified":
        return Certified(bound=bound, natural_weight=natural_weight)
    return Natural()


def training(train: str, epochs: int, method: str = "", *, nrs_weight: float | None = None,
             slim_weight: float | None = None, warmup: float | None = None, ramp: float | None = None,
             **options) -> FinetuneSettings:
    """FinetuneSettings of the protocol for ``train`` and pruning ``method``; ``options`` are the regime's
    (bound, attack, steps, natural_weight) and FinetuneSettings' own (lr, batch_size, seed, ...)."""
    regime_keys = {"bound", "attack", "steps", "natural_weight"}
    chosen = regime(train, **{k: v for k, v in options.items() if k in regime_keys})
    schedule = EpsSchedule(warmup=WARMUP * epochs if warmup is None else warmup,
                           ramp=RAMP * epochs if ramp is None else ramp)
    rest = {"lr_decay_at": LR_DECAY_AT, "grad_clip": GRAD_CLIP,
            **{k: v for k, v in options.items() if k not in regime_keys}}
    return FinetuneSettings(
        epochs=epochs, regime=chosen, eps_schedule=schedule,
        nrs_weight=(NRS_WEIGHT[train] if method == "nrs" else 0.0) if nrs_weight is None else nrs_weight,
        slim_weight=(SLIM_WEIGHT if method == "slimming" else 0.0) if slim_weight is None else slim_weight, **rest)


GLOBAL = ("nrs", "slimming", "random")  # ranked across layers; magnitude's L1 norms depend on fan-in


def lottery(method: str, **options) -> Schedule:
    """Rounds of the protocol for ``method``: 11% of the units (20% of the weights for ``unstructured``) per
    round, rewound to a random initialisation that round 0 trains; ranked globally for the criteria whose
    scores compare across layers, per layer otherwise. ``options`` override any of these."""
    defaults = {"rate": RATE["unstructured" if method == "unstructured" else "structured"], "init": "random",
                "rewind": True, "scope": "global" if method in GLOBAL else "layer"}
    return Schedule(**{**defaults, **options})
