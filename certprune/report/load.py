"""Reading result files (gate, certify, verify JSON) into one ModelResult per model, merged by content."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from certprune.errors import CertpruneError
from certprune.journal import file_sha256
from certprune.report.convert import CONVERTERS, Part, detect

WORST_FIRST = ("error", "fail", "inconclusive", "pass")
FIGURE_KEYS = {"certify": ("data", "samples", "per_eps"),
               "fairness": ("partitions", "certified", "falsified", "unknown"),
               "vnnlib": ("verdict",), "facts": ()}
PER_EPS_KEYS = ("eps", "verified", "falsified", "certified_accuracy", "falsified_share", "undecided_share",
                "seconds", "records")


class ReportError(CertpruneError):
    """A result file cannot be read, is not a certprune result, or an output cannot be written."""


@dataclass(frozen=True)
class ModelResult:
    """One model: its identity, the gate's outcome (None when no gate judged it) and its checks in the gate's
    shape. ``baseline_only`` models are known only as a gate's baseline."""

    name: str
    path: str
    sha256: str | None
    outcome: str | None
    sources: tuple[str, ...]
    checks: tuple[dict, ...]
    baseline_only: bool = False
    key: str = ""                       # sha256, or the path when the model file is not at hand
    baseline: str | None = None         # the key of the model a gate compared this one with


def load_results(paths: Sequence[str]) -> list[ModelResult]:
    """Every file's parts, merged per model in the order the models first appear."""
    return merge([(str(path), part) for path in paths for part in read_result(path)])


def read_result(path: str) -> list[Part]:
    data = read_json(path)
    return parts_of(data, path)


def parts_of(data: object, source: str) -> list[Part]:
    """The parts of one parsed result; a file that is not a result, or is malformed, is a one-line error."""
    kind = detect(data)
    if kind is None:
        raise ReportError(f"{source}: not a certprune result (expected the JSON written by "
                          "`certprune gate --json`, `certify --json` or `verify --json`)")
    try:
        parts = CONVERTERS[kind](data)
        for part in parts:
            for check in part.checks:
                _check_shape(check)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise ReportError(f"{source}: malformed {kind} result ({_describe(error)})") from None
    return parts


def read_json(path: str) -> object:
    file = Path(path)
    if not file.exists():
        raise ReportError(f"{path}: no such file")
    if file.is_dir():
        raise ReportError(f"{path}: is a folder, not a result file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text file (expected a certprune JSON result)") from None
    except OSError as error:
        raise ReportError(f"{path}: cannot read ({error.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None


def _check_shape(check: dict) -> None:
    """The keys every later stage reads; an unknown kind is shown but not plotted."""
    name, kind, figures = check["name"], check["kind"], check["figures"]
    if not isinstance(figures, dict):
        raise TypeError(f"check {name!r}: figures must be a mapping")
    missing = [key for key in FIGURE_KEYS.get(kind, ()) if key not in figures]
    if kind == "certify":
        missing += [f"per_eps.{eps}.{key}" for eps, entry in figures.get("per_eps", {}).items()
                    for key in PER_EPS_KEYS if key not in entry]
    if missing:
        raise KeyError(f"check {name!r} ({kind}) lacks {', '.join(missing)}")
    for key in ("requirements", "counterexamples"):
        if not isinstance(check.setdefault(key, []), list):
            raise TypeError(f"check {name!r}: {key} must be a list")


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"missing {error.args[0]}" if not str(error.args[0]).startswith("check ") else str(error.args[0])
    return str(error)


def merge(parts: Iterable[tuple[str, Part]]) -> list[ModelResult]:
    """Group parts by model, then combine each group's checks.

    A model is known by its sha256: from the result, or from the model file when it is at hand (certify and
    verify results name only the path). Without either, a path some other result gave a sha256 for joins that
    model; otherwise the path alone is the key.
    """
    parts = list(parts)
    for _, part in parts:
        for model in (part.model, part.baseline):
            if model is not None and not model.get("sha256") and Path(model["path"]).is_file():
                model["sha256"] = file_sha256(model["path"], "model")
    known = {_path(p.model): p.model["sha256"] for _, p in parts if p.model.get("sha256")}

    def key(model: dict) -> str:
        return model.get("sha256") or known.get(_path(model)) or f"path:{_path(model)}"

    groups: dict[str, list[tuple[str, Part]]] = {}
    for source, part in parts:
        groups.setdefault(key(part.model), []).append((source, part))
    return _unique_names([_merged(k, group, key) for k, group in groups.items()])


def _path(model: dict) -> str:
    return str(Path(model["path"]).resolve())


def _merged(key: str, group: list[tuple[str, Part]], key_of) -> ModelResult:
    """Own checks first; a baseline's figures only where no own check of that name exists."""
    own = [part for _, part in group if not part.derived]
    checks: dict[str, dict] = {}
    for part in own + [part for _, part in group if part.derived]:
        for check in part.checks:
            previous = checks.get(check["name"])
            if previous is None or (not part.derived and previous["kind"] != "certify"):
                checks[check["name"]] = check
            elif not part.derived and check["kind"] == "certify":
                checks[check["name"]] = _merge_certify(previous, check)
    model = (own or [group[0][1]])[-1].model
    outcomes = [part.outcome for part in own if part.outcome is not None]
    baselines = [key_of(part.baseline) for part in own if part.baseline is not None]
    return ModelResult(model["name"], model["path"], model.get("sha256"), outcomes[-1] if outcomes else None,
                       tuple(dict.fromkeys(source for source, _ in group)), tuple(checks.values()),
                       baseline_only=not own, key=key, baseline=baselines[-1] if baselines else None)


def _merge_certify(first: dict, second: dict) -> dict:
    """Two certify results of one model on one data set (say, one eps each): one check with every eps. At an
    eps both measured, the one over more samples is kept, whichever file came first."""
    def size(row: dict) -> int:  # a gate's rows count their samples, a certify result's list their records
        return row.get("samples", len(row.get("records", ())))

    per_eps, kept_from = dict(first["figures"]["per_eps"]), dict.fromkeys(first["figures"]["per_eps"], 0)
    for key, row in second["figures"]["per_eps"].items():
        if key not in per_eps or size(row) >= size(per_eps[key]):
            per_eps[key], kept_from[key] = row, 1
    examples: dict[tuple, dict] = {}  # a sample's counterexample once: from the file whose row at its eps is kept
    for source, check in enumerate((first, second)):
        for example in check["counterexamples"]:
            if example.get("eps") is None or kept_from.get(example["eps"]) == source:
                examples.setdefault((example.get("label"), tuple(example.get("x") or ())), example)
    eps = sorted({*first["settings"].get("eps", []), *second["settings"].get("eps", [])})
    outcome = worst([first["outcome"], second["outcome"]])
    return {**first, "outcome": outcome, "seconds": (first["seconds"] or 0.0) + (second["seconds"] or 0.0),
            "settings": {**first["settings"], "eps": eps},
            "counterexamples": list(examples.values()),
            "figures": {**first["figures"], "samples": max(size(row) for row in per_eps.values()),
                        "per_eps": dict(sorted(per_eps.items(), key=lambda kv: kv[1]["eps"]))}}


def worst(outcomes: Iterable[str | None]) -> str | None:
    present = [o for o in outcomes if o in WORST_FIRST]
    return min(present, key=WORST_FIRST.index) if present else None


def _unique_names(models: list[ModelResult]) -> list[ModelResult]:
    """Two different models with one file stem are told apart by their content (or path)."""
    names = [m.name for m in models]
    return [m if names.count(m.name) == 1 else replace(m, name=f"{m.name} ({m.sha256[:8] if m.sha256 else m.path})")
            for m in models]
