"""The samples a pruner scores, fine-tunes and measures on: inputs, labels, an L-inf radius and the input domain."""
from __future__ import annotations

import math

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from certprune.data import DATA_SETS, load_mnist, load_tabular
from certprune.datafile import is_data_file, read_data
from certprune.errors import CertpruneError
from certprune.types import clipped_ball

NAMES = DATA_SETS


@dataclass(frozen=True, eq=False)
class PruneData:
    """Samples ``x`` (N, *input_shape) with labels ``y`` (N,), and the boxes around them.

    The box of sample i is ``[x_i - eps, x_i + eps]`` clipped to ``[lower, upper]`` (a sample outside that
    domain, such as German ``property`` 3 against the published 0..2, is first clamped into it); ``eps``, ``lower`` and
    ``upper`` are numbers or tensors broadcast to the per-sample shape (per-feature radii for tables whose
    features have different ranges). Labels are class indices; a one-logit model reads them as 0/1.
    """

    x: torch.Tensor
    y: torch.Tensor
    eps: float | torch.Tensor = 0.0
    lower: float | torch.Tensor | None = None
    upper: float | torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise CertpruneError(f"data has {len(self.x)} inputs but {len(self.y)} labels")
        if bool((torch.as_tensor(self.eps) < 0).any()):
            raise CertpruneError(f"eps must be >= 0, got {self.eps}")

    def __len__(self) -> int:
        return len(self.x)

    def take(self, n: int | None) -> "PruneData":
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return PruneData(self.x[:n], self.y[:n], self.eps, self.lower, self.upper)

    def with_eps(self, eps: float | torch.Tensor) -> "PruneData":
        return PruneData(self.x, self.y, eps, self.lower, self.upper)

    def shaped(self, shape: tuple[int, ...]) -> "PruneData":
        """The samples (and per-feature eps and domain) in the model's input ``shape``, as ``certify`` reads
        flat rows for a (1, 8, 8) model; unchanged when the sizes differ (the caller names the mismatch)."""
        size = math.prod(shape)
        if len(self) == 0 or self.x[0].numel() != size or tuple(self.x.shape[1:]) == tuple(shape):
            return self

        def fit(value):
            return value.reshape(shape) if isinstance(value, torch.Tensor) and value.numel() == size else value

        return PruneData(self.x.reshape(len(self), *shape), self.y, fit(self.eps), fit(self.lower), fit(self.upper))

    def boxes(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper corners (N, *input_shape) of the boxes around ``x`` (default: all samples)."""
        return clipped_ball(self.x if x is None else x, self.eps, self.lower, self.upper)


def as_prune_data(data, eps: float | torch.Tensor = 0.0, lower=None, upper=None) -> PruneData:
    """PruneData from what a PyTorch user has: PruneData itself, an ``(x, y)`` pair of numpy arrays or tensors,
    or a ``torch.utils.data.DataLoader`` (or any iterable of ``(x, y)`` batches), concatenated in order."""
    if isinstance(data, PruneData):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        x, y = data
    else:
        try:
            batches = [(torch.as_tensor(bx), torch.as_tensor(by)) for bx, by in data]
        except (TypeError, ValueError) as error:
            raise CertpruneError(f"data must be PruneData, an (x, y) pair or a DataLoader of (x, y) batches; "
                                 f"got {type(data).__name__} ({error})") from None
        if not batches:
            raise CertpruneError("the data loader gave no batches")
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y).long().reshape(-1)
    if not bool(torch.isfinite(x).all()):
        raise CertpruneError("data has NaN or Inf inputs")
    return PruneData(x, y, eps, lower, upper)


def task_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross entropy over K logits, or binary cross entropy on a single logit (label 1 = positive)."""
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype), reduction=reduction)
    return F.cross_entropy(logits, y, reduction=reduction)


def predict(logits: torch.Tensor) -> torch.Tensor:
    """The decision: argmax of K logits, or ``logit > 0`` for a single one (as the fairness properties decide)."""
    if logits.shape[-1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def load_data(name: str, split: str, eps: float, **file_options) -> PruneData:
    """A data set's split as PruneData: a built-in name or the user's file (``certprune.datafile``).

    ``eps`` is in pixel units for MNIST, a fraction of each feature's domain width for the fairness tables
    (their features are raw integers of different ranges), and in the input's own units for a user's file.
    MNIST splits are ``certprune.data.load_mnist``'s; a table's ``train``/``test`` is the models' split
    (``TabularData.split(0.2, seed=0)``); a file without splits gives all its samples to both.
    ``file_options`` (label, features, value_range, count) go to ``read_data`` for files.
    """
    if is_data_file(name):
        arrays = read_data(name, split=split, strict_split=False, **file_options)
        return PruneData(torch.from_numpy(arrays.x), torch.from_numpy(arrays.y), eps,
                         torch.from_numpy(arrays.lower).float(), torch.from_numpy(arrays.upper).float())
    if name not in NAMES:
        raise CertpruneError(f"unknown data set {name!r}; expected one of {', '.join(NAMES)} or a .npz/.csv file")
    if split not in ("train", "test"):
        raise CertpruneError(f"unknown split {split!r}; expected train or test")
    if name == "mnist":
        x, y = load_mnist(split)
        return PruneData(x, y, eps, 0.0, 1.0)
    table = load_tabular(name)
    part = table.split(0.2, seed=0)[0 if split == "train" else 1]
    lo, hi = (torch.tensor(v, dtype=torch.float32) for v in table.domain_bounds())
    return PruneData(part.x, part.y, eps * (hi - lo), lo, hi)
