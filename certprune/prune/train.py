"""Training a Network: natural, adversarial (FGSM, PGD) or certified (IBP, CROWN-IBP), with regularisers.

A regime turns a batch into a loss; ``EpsSchedule`` grows the radius of the boxes it trains on (zero, then a
smoothed ramp to the data's eps); ``FinetuneSettings`` holds the optimiser, the regime, the schedule and
the regulariser weights: the RS loss of Xiao et al. (2019), -tanh(1 + l u) on IBP or CROWN bounds; the NRS
loss of Li et al. (2023), the same with l u divided by gamma^2 + c (``robust.nrs``); and network slimming's
L1 penalty on the per-unit scales (BatchNorm kept as an Affine, see ``batchnorm``). ``finetune`` runs it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping, Protocol

import torch

from certprune.errors import CertpruneError
from certprune.network import Network
from certprune.prune.dataset import PruneData, task_loss
from certprune.prune.module import NetworkModule, interval_pass
from certprune.prune.robust import margin_lower_bounds, nrs_loss, robust_cross_entropy

RS_BOUNDS = ("ibp", "crown")
CERTIFIED_BOUNDS = ("ibp", "crown-ibp")
ATTACKS = ("fgsm", "pgd")


@dataclass(frozen=True, kw_only=True)
class EpsSchedule:
    """The share of the data's eps trained on at each step (auto_LiRPA's SmoothedScheduler).

    Zero for the first ``warmup`` epochs; then over ``ramp`` epochs it grows as ``alpha * t^beta`` until the
    ``mid`` share of the ramp and linearly after it, with alpha chosen so that the two pieces meet with the
    same slope; then one. Steps are batches, so the ramp is smooth within an epoch.
    """

    warmup: float = 0.0
    ramp: float = 0.0
    mid: float = 0.4
    beta: float = 4.0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.ramp < 0 or not 0 <= self.mid <= 1 or self.beta < 1:
            raise CertpruneError(f"eps schedule needs warmup, ramp >= 0, 0 <= mid <= 1 and beta >= 1; got {self}")

    def factor(self, step: int, steps_per_epoch: int) -> float:
        """The eps share at batch ``step`` (1 for the first batch)."""
        start = self.warmup * steps_per_epoch
        end = start + self.ramp * steps_per_epoch
        if step <= start:
            return 0.0
        if step >= end:
            return 1.0
        mid = start + int((end - start) * self.mid)
        if mid <= start:
            return (step - start) / (end - start)
        slope = (mid - start) ** (self.beta - 1)
        alpha = 1.0 / ((end - mid) * self.beta * slope + (mid - start) * slope)
        if step < mid:
            return alpha * (step - start) ** self.beta
        at_mid = alpha * (mid - start) ** self.beta
        return min(at_mid + (1 - at_mid) * (step - mid) / (end - mid), 1.0)


@dataclass(frozen=True)
class Batch:
    """Samples with labels, the data they come from (its eps and domain) and the eps share of this step."""

    x: torch.Tensor
    y: torch.Tensor
    data: PruneData
    factor: float
    generator: torch.Generator

    def boxes(self, factor: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The boxes around the samples at ``factor`` (default: this step's) times the data's eps."""
        share = self.factor if factor is None else factor
        return self.data.with_eps(torch.as_tensor(self.data.eps) * share).boxes(self.x)


@dataclass(frozen=True)
class Step:
    """A regime's loss on a batch and, when it computed them, the IBP bounds of every ReLU input on the boxes."""

    loss: torch.Tensor
    pre: list | None = None


class Regime(Protocol):
    name: ClassVar[str]

    def loss(self, module: NetworkModule, batch: Batch) -> Step: ...


@dataclass(frozen=True, kw_only=True)
class Natural:
    """Cross entropy on the samples themselves."""

    name: ClassVar[str] = "natural"

    def loss(self, module: NetworkModule, batch: Batch) -> Step:
        return Step(task_loss(module(batch.x), batch.y))


@dataclass(frozen=True, kw_only=True)
class Adversarial:
    """Cross entropy on attacked samples in the (scheduled) boxes.

    ``fgsm``: one signed-gradient step of the full radius from the sample (zero start; the reference's step
    clip(1.25 eps sign(g), -eps, eps) is this one); ``pgd``: ``steps`` steps of ``step_size`` times the radius
    from a random start (Madry et al. 2018; default step 2.5 / steps).
    """

    attack: str = "fgsm"
    steps: int = 10
    step_size: float | None = None
    name: ClassVar[str] = "adversarial"

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS or self.steps < 1:
            raise CertpruneError(f"unknown attack {self.attack!r} or steps {self.steps} < 1; expected one of "
                                 f"{', '.join(ATTACKS)}")

    def loss(self, module: NetworkModule, batch: Batch) -> Step:
        if batch.factor == 0:
            return Step(task_loss(module(batch.x), batch.y))
        lower, upper = batch.boxes()
        if self.attack == "fgsm":
            x_adv = fgsm_attack(module, batch.x, batch.y, lower, upper)
        else:
            x_adv = pgd_attack(module, batch.x, batch.y, lower, upper, self.steps,
                               self.step_size or 2.5 / self.steps, batch.generator)
        return Step(task_loss(module(x_adv), batch.y))


@dataclass(frozen=True, kw_only=True)
class Certified:
    """Robust cross entropy from margin bounds on the scheduled boxes (``robust`` explains the bound).

    ``crown-ibp``: ``f`` CROWN-IBP + (1 - f) IBP with f = 1 - eps / eps_max (Zhang et al. 2020), so pure IBP
    at the full eps; ``ibp``: IBP alone (Gowal et al. 2018). While eps is zero the loss is the natural one;
    after that ``natural_weight`` * natural + (1 - natural_weight) * robust (0: robust only, the reference).
    """

    bound: str = "crown-ibp"
    natural_weight: float = 0.0
    name: ClassVar[str] = "certified"

    def __post_init__(self) -> None:
        if self.bound not in CERTIFIED_BOUNDS or not 0 <= self.natural_weight <= 1:
            raise CertpruneError(f"certified training needs bound in {', '.join(CERTIFIED_BOUNDS)} and natural "
                                 f"weight in [0, 1]; got {self.bound!r}, {self.natural_weight}")

    def loss(self, module: NetworkModule, batch: Batch) -> Step:
        if batch.factor == 0:
            return Step(task_loss(module(batch.x), batch.y))
        lower, upper = batch.boxes()
        share = 1.0 - batch.factor if self.bound == "crown-ibp" else 0.0
        margins, pre = margin_lower_bounds(module, lower, upper, batch.y, share)
        loss = robust_cross_entropy(margins)
        if self.natural_weight:
            loss = self.natural_weight * task_loss(module(batch.x), batch.y) + (1 - self.natural_weight) * loss
        return Step(loss, pre)


REGIMES = {"natural": Natural, "adversarial": Adversarial, "certified": Certified}


@dataclass(frozen=True, kw_only=True)
class FinetuneSettings:
    """Adam on a regime's loss plus regularisers; the first layer preconditioned by its inputs' widths.

    ``rs_lambda`` weighs the RS loss (at the data's eps, on ``rs_bounds``), ``nrs_weight`` the NRS loss (IBP
    bounds: the certified regime's own at the scheduled eps, else at the full eps), ``slim_weight`` the mean
    |scale| of the per-unit Affines (network slimming). ``lr_decay_at``: shares of the run after which the
    learning rate is divided by 10; ``grad_clip``: the gradient norm is clipped to it (None: not clipped).
    """

    epochs: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    regime: Natural | Adversarial | Certified = field(default_factory=Natural)
    eps_schedule: EpsSchedule = field(default_factory=EpsSchedule)
    rs_lambda: float = 0.0
    rs_bounds: str = "ibp"  # the bounds of the RS loss: ibp, or crown (dense networks)
    nrs_weight: float = 0.0
    slim_weight: float = 0.0
    lr_decay_at: tuple[float, ...] = ()
    grad_clip: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < (1 if name == "batch_size" else 0):
                raise CertpruneError(f"fine-tuning {name} must be {'positive' if name == 'batch_size' else '>= 0'}, "
                                     f"got {getattr(self, name)}")
        if self.rs_bounds not in RS_BOUNDS:
            raise CertpruneError(f"unknown RS bounds {self.rs_bounds!r}; expected one of {', '.join(RS_BOUNDS)}")
        weights = {"lr": self.lr, "rs_lambda": self.rs_lambda, "nrs_weight": self.nrs_weight,
                   "slim_weight": self.slim_weight, "weight_decay": self.weight_decay}
        if self.lr <= 0 or any(v < 0 for v in weights.values()):
            raise CertpruneError(f"fine-tuning needs lr > 0 and non-negative weights; got {weights}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise CertpruneError(f"grad_clip must be positive or None, got {self.grad_clip}")


def stability_loss(module: NetworkModule, lower: torch.Tensor, upper: torch.Tensor,
                   bounds: str = "ibp") -> torch.Tensor:
    """RS loss: mean over ReLU neurons and boxes of -tanh(1 + l * u) (IBP or CROWN bounds, differentiable)."""
    pre = module.crown_bounds(lower, upper) if bounds == "crown" else module.interval_bounds(lower, upper)
    terms = [-torch.tanh(1 + lo * hi).flatten(1) for lo, hi in pre]
    return torch.cat(terms, dim=1).mean() if terms else torch.zeros(())


def fgsm_attack(module: NetworkModule, x: torch.Tensor, y: torch.Tensor, lower: torch.Tensor,
                upper: torch.Tensor) -> torch.Tensor:
    """One step to the corner of each box the loss gradient's sign points to (the sample where it is zero)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(task_loss(module(x), y), x)
    return torch.where(grad > 0, upper, torch.where(grad < 0, lower, x.detach().clamp(lower, upper)))


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


def regularisers(module: NetworkModule, batch: Batch, step: Step, settings: FinetuneSettings) -> torch.Tensor:
    """The weighted RS, NRS and slimming terms of one batch."""
    total = torch.zeros(())
    if settings.rs_lambda:
        total = total + settings.rs_lambda * stability_loss(module, *batch.boxes(1.0), settings.rs_bounds)
    certified = isinstance(settings.regime, Certified)
    # Under certified training the NRS term uses the loss's own bounds and is added on robust batches only
    # (the reference's auto_LiRPA script); otherwise it is computed at the full eps on every batch.
    if settings.nrs_weight and not (certified and batch.factor == 0):
        pre = step.pre if certified and step.pre is not None else interval_pass(module, *batch.boxes(1.0))[0]
        total = total + settings.nrs_weight * nrs_loss(module, pre)
    if settings.slim_weight and len(module.scales):
        total = total + settings.slim_weight * torch.cat([s.abs() for s in module.scales.values()]).mean()
    return total


def finetune(network: Network, data: PruneData, settings: FinetuneSettings,
             weight_masks: Mapping[int, torch.Tensor] | None = None,
             on_epoch: Callable[[int, int, float], None] | None = None) -> Network:
    """Train ``network`` on ``data`` for ``settings.epochs``; masked weights stay exactly zero.

    Reproducible: the batch order, the attacks' random starts and every random draw of torch come from
    ``settings.seed`` (with one thread the result is bitwise the same on a machine). ``on_epoch(epoch,
    epochs, mean loss)`` hears when training starts (epoch 0, loss nan) and of every finished epoch.
    """
    if settings.epochs == 0:
        return network
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    module = NetworkModule(network, weight_masks, input_widths(network, data))
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    per_epoch = math.ceil(len(data) / settings.batch_size)
    total, step = settings.epochs * per_epoch, 0
    x_all, y_all = data.x.to(torch.float32), data.y
    if on_epoch is not None:
        on_epoch(0, settings.epochs, math.nan)
    for epoch in range(1, settings.epochs + 1):
        order = torch.randperm(len(data), generator=generator)
        losses = []
        for start in range(0, len(data), settings.batch_size):
            step += 1
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * 0.1 ** sum(step > share * total for share in settings.lr_decay_at)
            rows = order[start: start + settings.batch_size]
            batch = Batch(x_all[rows], y_all[rows], data, settings.eps_schedule.factor(step, per_epoch), generator)
            result = settings.regime.loss(module, batch)
            loss = result.loss + regularisers(module, batch, result, settings)
            optimizer.zero_grad()
            loss.backward()
            if settings.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), settings.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
        if on_epoch is not None:
            on_epoch(epoch, settings.epochs, sum(losses) / max(len(losses), 1))
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
