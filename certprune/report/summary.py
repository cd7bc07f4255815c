"""The comparison table: per model its size, accuracy, certified accuracy per eps, fairness and time."""
from __future__ import annotations

from dataclasses import dataclass, field

from certprune.report.load import ModelResult

RobustKey = tuple[str, float]   # (data set, eps)


@dataclass(frozen=True)
class Row:
    """One model's line of the summary; None where no check measured the figure."""

    model: ModelResult
    parameters: int | None = None
    flops: int | None = None
    clean_accuracy: float | None = None
    clean_accuracy_samples: int | None = None      # set when estimated from certify's samples, not a facts check
    parity: bool | None = None
    robust: dict[RobustKey, dict] = field(default_factory=dict)
    fairness: dict[str, dict] = field(default_factory=dict)
    vnnlib: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    cached: int = 0                                  # checks read back from the gate's cache


def summarize(models: list[ModelResult]) -> list[Row]:
    return [summary_row(model) for model in models]


def summary_row(model: ModelResult) -> Row:
    facts = next((c["figures"] for c in model.checks if c["kind"] == "facts"), {})
    robust = robust_figures(model)
    clean, samples = facts.get("clean_accuracy"), None
    if clean is None and robust:
        clean, samples = _clean_from_samples(robust)
    return Row(model, facts.get("parameters"), facts.get("flops"), clean, samples, facts.get("parity"), robust,
               {c["name"]: c["figures"] for c in model.checks if c["kind"] == "fairness"},
               {c["name"]: c["figures"] for c in model.checks if c["kind"] == "vnnlib"},
               sum(check_seconds(c) for c in model.checks), sum(bool(c.get("cached")) for c in model.checks))


def check_seconds(check: dict) -> float:
    """Time spent on a check: a certify check's per-sample seconds (kept when read from a cache or a baseline),
    otherwise the check's own time."""
    if check["kind"] == "certify":
        return float(sum(entry["seconds"] for entry in check["figures"]["per_eps"].values()))
    return float(check.get("seconds") or 0.0)


def robust_figures(model: ModelResult) -> dict[RobustKey, dict]:
    """Every certify check's per-eps figures keyed by (data, eps); the larger sample wins a tie."""
    out: dict[RobustKey, dict] = {}
    for check in model.checks:
        if check["kind"] != "certify":
            continue
        figures = check["figures"]
        for entry in figures["per_eps"].values():
            key = (str(figures["data"]), float(entry["eps"]))
            entry = {**entry, "samples": len(entry["records"]) or figures["samples"], "check": check["name"]}
            if key not in out or entry["samples"] > out[key]["samples"]:
                out[key] = entry
    return out


def _clean_from_samples(robust: dict[RobustKey, dict]) -> tuple[float, int]:
    """Without a facts check: the share of certify's samples the model classifies correctly."""
    entry = max(robust.values(), key=lambda e: e["samples"])
    return 1.0 - entry.get("misclassified", 0) / max(entry["samples"], 1), entry["samples"]


def references(models: list[ModelResult]) -> list[int | None]:
    """Whom each model's differences refer to: its gate baseline when some model has one, else the first model."""
    index = {model.key: i for i, model in enumerate(models)}
    if any(model.baseline in index for model in models):
        return [index.get(model.baseline) for model in models]
    return [None] + [0] * (len(models) - 1)


def reference_note(models: list[ModelResult]) -> str:
    if references(models)[1:] == [0] * (len(models) - 1):
        return f"Differences are against the first model, {models[0].name}."
    return "Differences are against each model's gate baseline."


def robust_keys(rows: list[Row]) -> list[RobustKey]:
    """Data sets in the order the models name them, each with its eps ascending."""
    order = data_sets(rows)
    return sorted({key for row in rows for key in row.robust}, key=lambda key: (order.index(key[0]), key[1]))


def data_sets(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(data for row in rows for data, _ in row.robust))


def check_names(rows: list[Row], kind: str) -> list[str]:
    """The names of the checks of one kind, in the order the models list them."""
    return list(dict.fromkeys(c["name"] for row in rows for c in row.model.checks if c["kind"] == kind))


def checks_by_name(models: list[ModelResult]) -> dict[str, list[tuple[ModelResult, dict]]]:
    """Each check name with every model that ran it: the drill-down compares them side by side."""
    out: dict[str, list[tuple[ModelResult, dict]]] = {}
    for model in models:
        for check in model.checks:
            out.setdefault(check["name"], []).append((model, check))
    return out


def undecided_share(figures: dict) -> float:
    if "undecided_share" in figures:
        return float(figures["undecided_share"])
    return 1.0 - float(figures.get("certified_share", 0.0)) - float(figures.get("falsified_share", 0.0))


def default_title(models: list[ModelResult]) -> str:
    """"Robustness", "Fairness" or both, by the checks the models carry, and the models compared."""
    kinds = {c["kind"] for m in models for c in m.checks}
    what = " and ".join(w for w, k in (("Robustness", "certify"), ("Fairness", "fairness")) if k in kinds)
    return f"{what or 'Model'} comparison: " + " vs ".join(m.name for m in models)
