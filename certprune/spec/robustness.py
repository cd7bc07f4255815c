"""Local robustness property files (YAML): L-inf balls around samples whose label must stay the argmax.

The file format, one mapping::

    kind: robustness           # required
    input_range: [0.0, 1.0]    # required: the valid range of the model's input; balls are clipped to it
    eps: 0.02                  # required, >= 0: the L-inf radius
    timeout: 30                # optional, seconds per instance, > 0
    # the samples, exactly one of:
    data: mnist                # a named data set (mnist), with
    split: test                #   optional, train or test (default test), and either
    indices: [0, 1, 7]         #   these indices, or
    range: [0, 100]            #   start (inclusive) and stop (exclusive)
    points:                    # inline samples
      - {x: [0.1, 0.5, 0.2], label: 1}
    file: samples.npz          # arrays x (N, ...) and y (N,), or a .csv/.parquet table (label column label,
                               # y or target), relative to this file; indices/range allowed

Each sample ``(x, label)`` becomes an instance on the box ``clip([x - eps, x + eps], input_range)`` whose
counterexamples are the inputs with ``y_j - y_label >= 0`` for some ``j != label``.
``robustness_property`` writes that in the VNN-LIB form (input box, disjunction of ``A @ y <= b``) so
one verifier handles both kinds of property files. Every error names the file, the key and its line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import yaml

from certprune.errors import CertpruneError, PropertyError
from certprune.spec.text import read_text
from certprune.spec.yamlfile import YamlReader
from certprune.spec.vnnlib import Disjunct, VnnlibProperty

DATASETS = ("mnist",)
SPLITS = ("train", "test")
KEYS = ("kind", "input_range", "eps", "timeout", "data", "split", "indices", "range", "points", "file")
Loader = Callable[[str], tuple[Any, Any]]  # split -> (x (N, ...), labels (N,))


@dataclass(frozen=True, eq=False)
class RobustnessSpec:
    """A parsed robustness file; the samples of a named data set are loaded by ``instances``."""

    source: str
    input_range: tuple[float, float]
    eps: float
    timeout: float | None
    data: str | None = None
    split: str = "test"
    selection: tuple[int, ...] | None = None  # indices into the data set or file; None takes all
    x: np.ndarray | None = None  # inline or file samples
    labels: np.ndarray | None = None
    lines: tuple[int, ...] = ()  # per inline point, else the line of the data/file key
    selection_line: int = 0


@dataclass(frozen=True, eq=False)
class RobustnessInstance:
    """One ball: the sample's identifier (its index), the sample, its label and the clipped box."""

    index: int
    x: np.ndarray
    label: int
    lower: np.ndarray
    upper: np.ndarray
    timeout: float | None

    def property(self, n_classes: int, source: str = "robustness") -> VnnlibProperty:
        return robustness_property(self.lower, self.upper, self.label, n_classes, f"{source} sample {self.index}")


def decision(outputs: np.ndarray) -> int:
    """The model's own decision rule on one output vector: class 1 iff ``y_0 > 0`` for a single logit, else
    the first largest output (numpy's and onnxruntime's ArgMax). A tie is decided, never a counterexample."""
    y = np.asarray(outputs).ravel()
    return int(y[0] > 0) if y.size == 1 else int(np.argmax(y))


def robustness_property(lower: np.ndarray, upper: np.ndarray, label: int, n_classes: int,
                        source: str = "robustness") -> VnnlibProperty:
    """"``label`` stays the argmax on the box" as a VNN-LIB counterexample specification.

    The rows are a closed superset of the counterexamples, ``y_j - y_label >= 0`` for some ``j != label``
    (one conjunction ``(e_label - e_j) @ y <= 0`` per other class ``j``; for a single logit ``y_0 <= 0`` for
    label 1 and ``-y_0 <= 0`` for label 0): a proof on them is a proof, but a point on them is a
    counterexample only when ``decision`` of its outputs differs from the label (ties go to the first
    largest output, and ``y_0 = 0`` to class 0). Searches therefore replay candidates by ``decision``.
    """
    if n_classes == 1:
        if label not in (0, 1):
            raise PropertyError(f"{source}: label {label} is not 0 or 1, the decisions of a single-logit model")
        row = np.array([[1.0 if label == 1 else -1.0]])
        return _ball(source, lower, upper, 1, [(row, np.zeros(1))])
    if not 0 <= label < n_classes:
        raise PropertyError(f"{source}: label {label} is not a class of a model with {n_classes} outputs")
    constraints = []
    for j in range(n_classes):
        if j != label:
            row = np.zeros((1, n_classes))
            row[0, label], row[0, j] = 1.0, -1.0
            constraints.append((row, np.zeros(1)))
    return _ball(source, lower, upper, n_classes, constraints)


def _ball(source: str, lower, upper, n_outputs: int, constraints: list) -> VnnlibProperty:
    lower = np.asarray(lower, dtype=np.float64).ravel()
    upper = np.asarray(upper, dtype=np.float64).ravel()
    return VnnlibProperty(source, lower.size, n_outputs, (Disjunct(lower, upper, tuple(constraints)),))


def instances(spec: RobustnessSpec, input_shape: tuple[int, ...], n_classes: int,
              loaders: Mapping[str, Loader] | None = None) -> list[RobustnessInstance]:
    """The instances of ``spec`` for a model with per-sample ``input_shape`` and ``n_classes`` logits.

    ``loaders`` maps data set names to ``split -> (x, labels)``; by default ``certprune.data``.
    """
    ids, x, labels, lines = _samples(spec, loaders)
    size = math.prod(input_shape)
    if x[0].size != size:
        raise PropertyError(f"{spec.source} line {lines[0]}: samples have {x[0].size} values, "
                            f"the model input {tuple(input_shape)} has {size}")
    lo, hi = spec.input_range
    result = []
    for i, (index, sample, label, line) in enumerate(zip(ids, x, labels, lines)):
        sample = sample.reshape(input_shape)
        if not np.all(np.isfinite(sample)):
            raise PropertyError(f"{spec.source} line {line}: sample {index} has NaN or Inf inputs")
        if sample.min() < lo or sample.max() > hi:
            raise PropertyError(f"{spec.source} line {line}: sample {index} lies outside input_range [{lo}, {hi}]")
        classes = 2 if n_classes == 1 else n_classes  # one logit: class 1 iff it is > 0 (``decision``)
        if not 0 <= label < classes:
            raise PropertyError(f"{spec.source} line {line}: sample {index} has label {label}, but the model has "
                                + ("one output (labels 0 and 1)" if n_classes == 1 else f"{n_classes} outputs"))
        lower, upper = np.clip(sample - spec.eps, lo, hi), np.clip(sample + spec.eps, lo, hi)
        result.append(RobustnessInstance(int(index), sample, int(label), lower, upper, spec.timeout))
    return result


def _samples(spec: RobustnessSpec, loaders: Mapping[str, Loader] | None):
    if spec.data is not None:
        loader = (loaders or _default_loaders()).get(spec.data)
        if loader is None:
            raise PropertyError(f"{spec.source} line {spec.lines[0]}: no loader for data set '{spec.data}'")
        x, labels = loader(spec.split)
    else:
        x, labels = spec.x, spec.labels
    x, labels = np.asarray(x, dtype=np.float64), np.asarray(labels).astype(np.int64).ravel()
    if spec.selection is None:
        lines = spec.lines if len(spec.lines) == len(x) else spec.lines[:1] * len(x)
        return np.arange(len(x)), x, labels, lines
    ids = np.asarray(spec.selection)
    if ids.max() >= len(x):
        raise PropertyError(f"{spec.source} line {spec.selection_line}: index {ids.max()} is beyond the "
                            f"{len(x)} samples")
    return ids, x[ids], labels[ids], (spec.selection_line,) * len(ids)


def _default_loaders() -> dict[str, Loader]:
    from certprune.data import load_mnist  # deferred: only files naming a data set need it

    return {"mnist": load_mnist}


# ---------------------------------------------------------------------------------------------------
# Parsing: yaml.compose keeps each node's line, so every error can name the key and where it is.


def read_robustness(path: str | Path) -> RobustnessSpec:
    """Parse a robustness YAML file; errors are PropertyError naming the file, key and line."""
    return parse_robustness(read_text(path), str(path), Path(path).parent)


def parse_robustness(text: str, source: str = "<string>", base: str | Path = ".") -> RobustnessSpec:
    """Parse robustness YAML text; ``source`` names it in errors, ``base`` anchors a relative ``file``."""
    return _Parser(source, Path(base)).parse(text)


class _Parser(YamlReader):
    def __init__(self, source: str, base: Path) -> None:
        super().__init__(source)
        self.base = base

    def parse(self, text: str) -> RobustnessSpec:
        keys = self.mapping(self.compose(text), KEYS, "the file")
        for name in ("kind", "input_range", "eps"):
            if name not in keys:
                raise PropertyError(f"{self.source}: missing required key '{name}'")
        kind = self.value(keys["kind"])
        if kind != "robustness":
            raise self.error(keys["kind"], f"kind must be 'robustness', got {kind!r}")
        lo, hi = self.numbers(keys["input_range"], "input_range", 2)
        if not lo < hi:
            raise self.error(keys["input_range"], f"input_range must have lo < hi, got [{lo}, {hi}]")
        eps = self.number(keys["eps"], "eps")
        if eps < 0:
            raise self.error(keys["eps"], f"eps must be >= 0, got {eps}")
        timeout = None
        if "timeout" in keys:
            timeout = self.number(keys["timeout"], "timeout")
            if timeout <= 0:
                raise self.error(keys["timeout"], f"timeout must be > 0, got {self.value(keys['timeout'])}")
        spec = RobustnessSpec(self.source, (lo, hi), eps, timeout)
        return self.samples(spec, keys)

    def samples(self, spec: RobustnessSpec, keys: dict[str, yaml.Node]) -> RobustnessSpec:
        sources = [name for name in ("data", "points", "file") if name in keys]
        if len(sources) != 1:
            found = f"got {', '.join(sources)}" if sources else "got none"
            raise PropertyError(f"{self.source}: give the samples with exactly one of data, points, file ({found})")
        name = sources[0]
        node = keys[name]
        if "split" in keys and name != "data":
            raise self.error(keys["split"], "'split' only applies to 'data'")
        selection, selection_line = self.selection(keys, name)
        line = node.start_mark.line + 1
        if name == "data":
            data = self.value(node)
            if data not in DATASETS:
                raise self.error(node, f"unknown data set {data!r} (known: {', '.join(DATASETS)})")
            split = self.value(keys["split"]) if "split" in keys else "test"
            if split not in SPLITS:
                raise self.error(keys["split"], f"split must be one of {', '.join(SPLITS)}, got {split!r}")
            if selection is None:
                raise self.error(node, "'data' needs 'indices' or 'range' to pick samples")
            return replace(spec, data=data, split=split, selection=selection, lines=(line,),
                            selection_line=selection_line)
        if name == "points":
            x, labels, lines = self.points(node)
            return replace(spec, x=x, labels=labels, lines=lines)
        x, labels = self.npz(node)
        if selection is not None and max(selection) >= len(x):
            raise PropertyError(f"{self.source} line {selection_line}: index {max(selection)} is beyond the "
                                f"{len(x)} samples of {self.value(node)}")
        return replace(spec, x=x, labels=labels, lines=(line,), selection=selection,
                        selection_line=selection_line)

    def selection(self, keys: dict[str, yaml.Node], source: str) -> tuple[tuple[int, ...] | None, int]:
        given = [k for k in ("indices", "range") if k in keys]
        if not given:
            return None, 0
        node = max((keys[k] for k in given), key=lambda n: n.start_mark.line)
        if len(given) == 2:
            raise self.error(node, "give either 'indices' or 'range', not both")
        if source == "points":
            raise self.error(node, f"'{given[0]}' does not apply to inline 'points'")
        if given[0] == "range":
            start, stop = self.integers(node, "range", 2)
            if not 0 <= start < stop:
                raise self.error(node, f"range must be [start, stop] with 0 <= start < stop, got [{start}, {stop}]")
            return tuple(range(start, stop)), node.start_mark.line + 1
        indices = self.integers(node, "indices", None)
        if not indices or min(indices) < 0:
            raise self.error(node, "indices must be a non-empty list of integers >= 0")
        return tuple(indices), node.start_mark.line + 1

    def points(self, node: yaml.Node) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.error(node, "points must be a non-empty list of {x: [...], label: k}")
        xs, labels, lines = [], [], []
        for item in node.value:
            fields = dict((self.value(k), v) for k, v in item.value) if isinstance(item, yaml.MappingNode) else {}
            if set(fields) != {"x", "label"}:
                raise self.error(item, "each point must be a mapping with exactly the keys x and label")
            x = np.asarray(self.value(fields["x"]), dtype=object)
            if x.size == 0 or not all(_is_number(v) for v in x.ravel()):
                raise self.error(fields["x"], "x must be a non-empty (nested) list of numbers")
            if xs and x.shape != xs[0].shape:
                raise self.error(fields["x"], f"x has shape {x.shape}, the first point has {xs[0].shape}")
            xs.append(x.astype(np.float64))
            labels.append(self.integer(fields["label"], "label"))
            lines.append(item.start_mark.line + 1)
        return np.stack(xs), np.asarray(labels), tuple(lines)

    def npz(self, node: yaml.Node) -> tuple[np.ndarray, np.ndarray]:
        name = self.value(node)
        if not isinstance(name, str):
            raise self.error(node, f"file must be a path, got {name!r}")
        return self.table(node, name)

    def table(self, node: yaml.Node, name: str) -> tuple[np.ndarray, np.ndarray]:
        """An .npz, CSV or parquet file as every command reads one (``certprune.datafile``: arrays x and y, or
        a label column label, y or target; its test split where it has one; NaN, Inf and labels that are not
        class indices refused), named by this key's line when it cannot be read."""
        import warnings

        from certprune.datafile import read_data

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the domain and split notes: the box here is eps around x
                arrays = read_data(self.base / name, strict_split=False)
        except CertpruneError as error:
            raise self.error(node, str(error)) from None
        return arrays.x.reshape(len(arrays.x), -1).astype(np.float64), arrays.y.astype(np.int64).ravel()

    # -- scalars -------------------------------------------------------------------------------------

    def number(self, node: yaml.Node, key: str) -> float:
        value = self.value(node)
        if not _is_number(value) or not math.isfinite(value):
            raise self.error(node, f"{key} must be a number, got {value!r}")
        return float(value)

    def integer(self, node: yaml.Node, key: str) -> int:
        value = self.value(node)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(node, f"{key} must be an integer, got {value!r}")
        return value

    def numbers(self, node: yaml.Node, key: str, length: int) -> list[float]:
        if not isinstance(node, yaml.SequenceNode) or len(node.value) != length:
            raise self.error(node, f"{key} must be a list of {length} numbers")
        return [self.number(item, key) for item in node.value]

    def integers(self, node: yaml.Node, key: str, length: int | None) -> list[int]:
        if not isinstance(node, yaml.SequenceNode) or (length is not None and len(node.value) != length):
            raise self.error(node, f"{key} must be a list of {length or 'some'} integers")
        return [self.integer(item, key) for item in node.value]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
