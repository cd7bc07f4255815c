"""The user's own data: an ``.npz`` or ``.csv`` (``.parquet`` with pyarrow) file as inputs, labels and a domain.

* ``.npz``: arrays ``x`` and ``y`` (or ``x_train``/``y_train`` and ``x_test``/``y_test``), optional ``lower`` and
  ``upper`` for the input domain (one value, or one per feature).
* ``.csv`` / ``.parquet``: one row per sample; the label column is ``label`` (or the one named by ``label=``,
  else the first of ``label``, ``y``, ``target``); ``features`` picks and orders the input columns (default:
  every other column except ``split``); an optional ``split`` column holds ``train``/``test`` per row. The
  domain comes from a sidecar ``<file stem>.domain.json`` (``{"lower": .., "upper": ..}`` or
  ``{"<feature>": [lo, hi], ...}``), else from ``value_range``, else from the data's own min and max, with a
  warning (a box then never leaves the values seen).

Every problem is one CertpruneError naming the file and what is wrong: missing arrays or columns, a column
that is not numeric (encode it first), NaN or Inf, a domain that does not contain the data.
"""
from __future__ import annotations

import csv
import difflib
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from certprune.errors import CertpruneError

LABEL_COLUMNS = ("label", "y", "target")
SPLITS = ("train", "test", "all")
SUFFIXES = (".npz", ".csv", ".parquet")


@dataclass(frozen=True, eq=False)
class DataArrays:
    """Inputs (N, features...) float32, integer labels (N,), the domain (broadcast to one sample's shape)."""

    x: np.ndarray
    y: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    source: str
    features: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.x)


class _NoSplit(Exception):
    """The file holds one set of samples, not train and test."""


def is_data_file(value: str) -> bool:
    return Path(value).suffix.lower() in SUFFIXES


def read_data(path: str | Path, *, split: str | None = None, label: str | None = None,
              features: tuple[str, ...] | None = None, value_range: tuple[float, float] | None = None,
              count: int | None = None, strict_split: bool = True) -> DataArrays:
    """Read the user's samples (``split``: train, test or all; default: test where the file has splits,
    else all), the first ``count`` of them. Without ``strict_split`` a file with no splits gives all its
    samples for train and test alike."""
    path = Path(path)
    if split is not None and split not in SPLITS:
        raise CertpruneError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not path.is_file():
        raise CertpruneError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise CertpruneError(f"{path}: data files are .npz, .csv or .parquet, got {suffix or 'no suffix'}")
    if suffix == ".npz" and (label is not None or features is not None):
        raise CertpruneError(f"{path}: --label and --features pick columns of a .csv or .parquet table; an .npz "
                             "holds arrays x and y")
    try:
        x, y, lower, upper, names = _npz(path, split) if suffix == ".npz" else _table(path, split, label, features)
    except _NoSplit:
        if strict_split:
            raise CertpruneError(f"{path}: has no '{split}' split (x_train/x_test arrays or a 'split' column); "
                                 "use --split all") from None
        warnings.warn(f"{path}: no train/test split (a 'split' column or x_train/x_test arrays): every sample is "
                      "test data, and for prune training data too (its test accuracy is then measured on training "
                      "data)", stacklevel=2)
        return read_data(path, split="all", label=label, features=features, value_range=value_range, count=count)
    if value_range is not None:
        if lower is not None:  # the command line wins over the file, and says so
            warnings.warn(f"{path}: --range {value_range[0]:g} {value_range[1]:g} replaces the domain the file "
                          "gives (its lower/upper arrays or .domain.json sidecar)", stacklevel=2)
        lower, upper = np.float64(value_range[0]), np.float64(value_range[1])
    if lower is None:
        lower, upper = x.min(axis=0), x.max(axis=0)
        warnings.warn(f"{path}: no input domain given (lower/upper, a .domain.json sidecar or --range); using the "
                      "data's own min and max, so boxes never leave the values seen", stacklevel=2)
    x, y = x[:count], y[:count]
    _check(path, x, y, lower, upper)
    shape = x.shape[1:]
    return DataArrays(x.astype(np.float32), y.astype(np.int64), np.broadcast_to(lower, shape).astype(np.float64),
                      np.broadcast_to(upper, shape).astype(np.float64), str(path), names)


def _not_a_number(path: Path, column) -> str:
    """Where a column stops being numbers: the first value that is not one, by its line in a CSV file (1: the
    header) or its row in a table, in any split (the split's own rows may all read as numbers)."""
    for row, value in column.items():
        try:
            float(value)
        except (TypeError, ValueError):
            return f"{_where(path, row)}: {value!r}"
    return f"e.g. {column.iloc[0]!r}"


def _npz(path: Path, split: str | None):
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise CertpruneError(f"{path}: not a readable .npz file ({error})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):  # np.save's .npy under an .npz name
        raise CertpruneError(f"{path}: not a readable .npz file (one array, as np.save writes; use np.savez)")
    with arrays:
        files = set(arrays.files)
        chosen = _npz_split(path, files, split)

        def array(name: str) -> np.ndarray:
            try:
                return _numeric(path, arrays[name], name)
            except (OSError, ValueError, zipfile.BadZipFile) as error:  # object arrays need pickle: refused
                raise CertpruneError(f"{path}: array {name} cannot be read ({str(error).splitlines()[0]}); "
                                     "save numeric arrays of one shape") from None

        x = np.concatenate([array(f"x{s}") for s in chosen])
        y = np.concatenate([array(f"y{s}") for s in chosen])
        lower = array("lower") if "lower" in files else None
        upper = array("upper") if "upper" in files else None
    if len(x) == 0:
        raise CertpruneError(f"{path}: no samples")
    if (lower is None) != (upper is None):
        raise CertpruneError(f"{path}: give both arrays lower and upper, or neither")
    if len(x) != len(y):
        raise CertpruneError(f"{path}: x has {len(x)} samples and y {len(y)}")
    return x.astype(np.float64), _labels(path, y), lower, upper, ()


def _npz_split(path: Path, files: set[str], split: str | None) -> list[str]:
    """The array suffixes to read: '' for x/y, '_train'/'_test' for split files."""
    if {"x", "y"} <= files:
        if split in ("train", "test"):
            raise _NoSplit()
        return [""]
    if {"x_train", "y_train", "x_test", "y_test"} <= files:
        return {"train": ["_train"], "test": ["_test"], "all": ["_train", "_test"], None: ["_test"]}[split]
    raise CertpruneError(f"{path}: needs arrays x and y (or x_train, y_train, x_test, y_test); "
                         f"it has {', '.join(sorted(files)) or 'none'}")


def _table(path: Path, split: str | None, label: str | None, features):
    frame = read_table(path)
    columns = [str(c) for c in frame.columns]
    if len(columns) == 1 and path.suffix.lower() == ".csv":
        other = next((name for mark, name in ((";", "semicolons"), ("\t", "tabs")) if mark in columns[0]), None)
        if other is not None:  # a European Excel export, or a .tsv renamed
            raise CertpruneError(f"{path}: its header is one column {columns[0]!r}: the file looks separated by "
                                 f"{other}; certprune reads comma-separated values")
    if label is None:
        label = next((c for c in LABEL_COLUMNS if c in columns), None)
        if label is None:
            raise CertpruneError(f"{path}: no label column (named {', '.join(LABEL_COLUMNS)}); name it with --label")
    if label not in columns:
        raise CertpruneError(f"{path}: no column {label!r} for the label; columns are {', '.join(columns)}")
    names = tuple(features) if features else tuple(c for c in columns if c not in (label, "split"))
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice or label in names:
        raise CertpruneError(f"{path}: feature {twice[0]!r} is given twice" if twice else
                             f"{path}: column {label!r} is the label; leave it out of the features")
    missing = [n for n in names if n not in columns]
    if missing:
        raise CertpruneError(f"{path}: no column {missing[0]!r}; columns are {', '.join(columns)}")
    whole = frame
    if "split" in columns and split != "all":
        odd = ~frame["split"].astype(str).isin(("train", "test")).to_numpy()
        if odd.any() and odd.sum() < len(frame):  # a typo drops a row quietly otherwise (all odd: refused below)
            row = int(np.flatnonzero(odd)[0])
            warnings.warn(f"{path}: {int(odd.sum())} row(s) have a split other than 'train' or 'test' (e.g. "
                          f"{frame['split'].iloc[row]!r} at {_where(path, frame.index[row])}) and are left out; "
                          "--split all takes every row", stacklevel=3)
        frame = frame[frame["split"].astype(str) == (split or "test")]
    elif split in ("train", "test"):
        raise _NoSplit()
    if not len(frame):
        found = sorted(set(whole["split"].astype(str))) if "split" in columns else []
        raise CertpruneError(f"{path}: no samples" + (f" in split {split or 'test'!r}" if found else "")
                             + (f"; the split column holds {', '.join(map(repr, found[:6]))}" if found else ""))
    for name in names + (label,):
        if frame[name].dtype.kind not in "biuf":
            where = _not_a_number(path, whole[name])
            raise CertpruneError(f"{path}: column {name!r} is not numeric ({where}); encode it "
                                 "as numbers first (e.g. pandas factorize or sklearn OrdinalEncoder)")
    empty = frame[list(names) + [label]].isna()
    if empty.to_numpy().any():
        row, column = next((r, c) for r, c in zip(*np.nonzero(empty.to_numpy())))
        raise CertpruneError(f"{path} {_where(path, frame.index[row])}: no value in column "
                             f"{empty.columns[column]!r}")
    x = frame[list(names)].to_numpy(dtype=np.float64)
    lower, upper = domain_sidecar(path, names, tuple(str(c) for c in frame.columns))
    return x, _labels(path, frame[label].to_numpy()), lower, upper, names


def _where(path: Path, row: int) -> str:
    """A row of a table as the user finds it: its line in a CSV file (1: the header), else its row number."""
    return f"line {row + 2}" if path.suffix.lower() == ".csv" else f"row {row}"


def read_table(path: Path):
    """The .csv or .parquet file as a pandas DataFrame (pandas imported here, when a table is read)."""
    try:
        import pandas as pd
    except ImportError:
        raise CertpruneError("reading .csv or .parquet data needs pandas: pip install pandas") from None
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            reader = csv.reader(handle)
            names = next(reader, [])
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise CertpruneError(f"{path}: column {twice[0]!r} appears more than once in the header")
            for row in reader:  # pandas would shift a longer row into an index column and blame another one
                if len(row) > len(names) and any(cell.strip() for cell in row[len(names):]):
                    raise CertpruneError(f"{path} line {reader.line_num}: {len(row)} fields, the header has "
                                         f"{len(names)}")
        return pd.read_csv(path)
    except csv.Error as error:
        raise CertpruneError(f"{path}: cannot read the table ({error})") from None
    except ImportError as error:
        raise CertpruneError(f"{path}: reading parquet needs pyarrow: pip install pyarrow ({error})") from None
    except (OSError, ValueError) as error:
        raise CertpruneError(f"{path}: cannot read the table ({str(error).splitlines()[0]})") from None


def domain_sidecar(path: Path, names: tuple[str, ...], columns: tuple[str, ...] = ()):
    """The domain (lower, upper) that the sidecar `<stem>.domain.json` gives the features `names`, or (None, None)."""
    side = path.with_name(f"{path.stem}.domain.json")
    if not side.is_file():
        return None, None
    try:
        spec = json.loads(side.read_text(encoding="utf-8-sig"))
    except ValueError as error:
        raise CertpruneError(f"{side}: not valid JSON ({error})") from None
    if isinstance(spec, dict) and set(spec) == {"lower", "upper"}:
        return _numbers(side, spec["lower"], "lower"), _numbers(side, spec["upper"], "upper")
    if not isinstance(spec, dict):
        raise CertpruneError(f"{side}: needs an object, {{\"lower\": .., \"upper\": ..}} or a [lo, hi] per feature")
    known = ("lower", "upper", *names, *columns)  # a sidecar may describe columns --features leaves out
    unknown = [key for key in spec if key not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CertpruneError(f"{side}: unknown key {unknown[0]!r}{hint}; keys are lower/upper or the features "
                             f"{', '.join(names)}")
    missing = [n for n in names if n not in spec]
    if missing:
        raise CertpruneError(f"{side}: needs lower/upper or a [lo, hi] per feature; missing {missing[0]!r}")
    bounds = [_numbers(side, spec[n], n) for n in names]
    short = [n for n, b in zip(names, bounds) if b.shape != (2,)]
    if short:
        raise CertpruneError(f"{side}: feature {short[0]!r} needs [lo, hi], two numbers, got {spec[short[0]]!r}")
    bounds = np.asarray(bounds)
    return bounds[:, 0], bounds[:, 1]


def _numbers(side: Path, value, key: str) -> np.ndarray:
    """A number or a list of numbers from the sidecar, or one line naming its key."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim > 1:
        raise CertpruneError(f"{side}: key {key!r} must be a number or a list of numbers, got {value!r}")
    return array


def _numeric(path: Path, array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise CertpruneError(f"{path}: array {name} holds {array.dtype} values; it must be numeric")
    return array


def _labels(path: Path, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim > 1 and y.size != len(y):
        raise CertpruneError(f"{path}: labels have shape {y.shape}; they must be class indices 0, 1, ... (one-hot "
                             "labels: save y.argmax(axis=1))")
    y = y.ravel()
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise CertpruneError(f"{path}: labels must be class indices 0, 1, ...; found {y[~(y == np.round(y))][:1]}")
    return y.astype(np.int64)


def _check(path: Path, x: np.ndarray, y: np.ndarray, lower, upper) -> None:
    if len(x) == 0:
        raise CertpruneError(f"{path}: no samples")
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise CertpruneError(f"{path}: sample {row} has NaN or Inf inputs")
    if (y < 0).any():
        raise CertpruneError(f"{path}: label {int(y.min())} is negative; labels are class indices 0, 1, ...")
    try:
        lo, hi = np.broadcast_to(lower, x.shape[1:]), np.broadcast_to(upper, x.shape[1:])
    except ValueError:
        raise CertpruneError(f"{path}: the domain has shape {np.shape(lower)}, a sample {x.shape[1:]}") from None
    if np.any(lo > hi) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise CertpruneError(f"{path}: the domain must be finite with lower <= upper")
    outside = (x < lo) | (x > hi)
    if outside.any():
        sample, *feature = (int(i) for i in np.argwhere(outside)[0])
        value, bounds = x[(sample, *feature)], (lo[tuple(feature)], hi[tuple(feature)])
        raise CertpruneError(f"{path}: sample {sample}, input {feature[0] if len(feature) == 1 else tuple(feature)}: "
                             f"{value:g} lies outside the domain [{bounds[0]:g}, {bounds[1]:g}] (widen lower/upper, "
                             f"the .domain.json sidecar or --range)")
