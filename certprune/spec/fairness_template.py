"""A fairness property skeleton from a table: every feature's domain as the data shows it, for the user to edit.

Integer columns become ``type: int`` with their observed ``[min, max]``; other numeric columns ``type: real``.
The label column (and a ``split`` column) are left out; the protected attributes must be columns. The YAML
it writes parses with ``parse_fairness`` (checked before it is written), so editing starts from a valid file.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from certprune.datafile import LABEL_COLUMNS, domain_sidecar, read_table
from certprune.errors import CertpruneError
from certprune.spec.fairness import parse_fairness


def fairness_template(path: str | Path, protected: tuple[str, ...], *, label: str | None = None,
                      max_values: int = 100, model_io: tuple[int, int] | None = None) -> str:
    """The YAML text of a fairness property over the features of the .csv/.parquet table at ``path``.

    ``model_io``: the (inputs, outputs) of the model the property is for: the features must be as many as its
    inputs, and the decision is ``argmax`` for a model with several outputs (one logit: ``logit > 0``)."""
    path = Path(path)
    if not path.is_file():
        raise CertpruneError(f"data file not found: {path}")
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise CertpruneError(f"{path}: the template reads a .csv or .parquet table (one column per feature), "
                             f"not a {path.suffix or 'file without a suffix'}")
    frame = read_table(path)
    columns = [str(c) for c in frame.columns]
    if label is not None and label not in columns:
        raise CertpruneError(f"{path}: no column {label!r} for the label (columns: {', '.join(columns)})")
    label = label or next((c for c in LABEL_COLUMNS if c in columns), None)
    if label is None:
        warnings.warn(f"{path}: no label column ({', '.join(LABEL_COLUMNS)}): every column is taken as a model "
                      "input; name the label with --label", stacklevel=2)
    features = [c for c in columns if c not in (label, "split")]
    missing = [p for p in protected if p not in features]
    if missing:
        raise CertpruneError(f"{path}: protected attribute {missing[0]!r} is not a feature column; "
                             f"features are {', '.join(features)}")
    twice = sorted({p for p in protected if protected.count(p) > 1})
    if twice:
        raise CertpruneError(f"--protected: {twice[0]!r} is given twice")
    for name in protected:
        values = frame[name].to_numpy()
        if values.dtype.kind in "biuf" and np.all(np.isfinite(values)) and not np.all(np.round(values) == values):
            raise CertpruneError(f"{path}: protected attribute {name!r} holds real values; a protected attribute "
                                 "takes a few integer values: encode it as integers (e.g. age groups) first")
    lower, upper = domain_sidecar(path, tuple(features), tuple(columns))
    if lower is not None:
        lower, upper = np.broadcast_to(lower, len(features)), np.broadcast_to(upper, len(features))
    if model_io is not None and model_io[0] != len(features):
        hint = "; name the label with --label" if label is None else ""
        raise CertpruneError(f"{path}: {len(features)} feature columns ({', '.join(features)}, label "
                             f"{label or 'none'} left out), but the model takes {model_io[0]} inputs{hint}")
    decision = "decision: {output: 0, threshold: 0.0}   # one logit; or: decision: argmax"
    if model_io is not None and model_io[1] > 1:
        decision = f"decision: argmax   # the model has {model_io[1]} outputs: the class with the largest logit"
    seen = "the values seen in the data: widen them to the domain\n# the property should cover" if lower is None \
        else f"those of {path.stem}.domain.json"
    lines = [f"# A fairness property for the features of {path.name}, in the table's column order: this must",
             f"# be the model's input order. Domains are {seen}. Label column left out: {label or 'none found'}.",
             "kind: fairness", f"description: \"individual fairness of {', '.join(protected)} ({path.name})\"",
             decision, "attributes:"]
    for k, name in enumerate(features):
        bounds = None if lower is None else (float(lower[k]), float(upper[k]))
        lines.append("  " + _attribute(path, name, frame[name].to_numpy(), bounds))
    lines += [f"protected: [{', '.join(protected)}]", f"partition: {{max_values: {max_values}}}",
              "timeout: {partition: 30, total: 3600}", "engine: auto"]
    text = "\n".join(lines) + "\n"
    parse_fairness(text, f"template for {path.name}")  # the skeleton itself must be valid
    return text


def _attribute(path: Path, name: str, values: np.ndarray, bounds: tuple[float, float] | None) -> str:
    """One attribute line: int when every value is an integer, else real; its range the sidecar's ``bounds``
    (rounded inward to integers for an int attribute) or the values' own min and max."""
    if values.dtype.kind not in "biuf":
        raise CertpruneError(f"{path}: column {name!r} is not numeric; encode it as integers first")
    if not np.all(np.isfinite(values)):
        raise CertpruneError(f"{path}: column {name!r} has NaN or Inf values")
    low, high = (values.min(), values.max()) if bounds is None else bounds
    if np.all(values == np.round(values)):
        return f"- {{name: {name}, type: int, range: [{math.ceil(low)}, {math.floor(high)}]}}"
    return f"- {{name: {name}, type: real, range: [{float(low)!r}, {float(high)!r}]}}"
