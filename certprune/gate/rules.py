"""Judging a check's figures against its requirements: pass, fail, or inconclusive when undecided work matters.

Every figure is known as an interval: what was decided gives one end, what stayed undecided could fall either
way and gives the other (certified accuracy lies in ``[verified, verified + undecided] / n``). A requirement
passes when it holds over the whole interval, fails when it holds nowhere in it, and is inconclusive
otherwise: a gate never passes on work it did not finish, and never fails on it either. ``vs_baseline`` rules
judge the interval of the difference ``this model - baseline``.
"""
from __future__ import annotations

from certprune.spec.policy import Requirement, Threshold

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
Interval = tuple[float, float]


def metric_interval(kind: str, figures: dict, metric: str, eps: float | None = None) -> Interval | bool | None:
    """The interval of a numeric metric (or the bool / None of a boolean one) in a check's figures."""
    if kind == "certify":
        row = figures["per_eps"][eps_key(eps)]
        n = max(row["samples"], 1)
        undecided = row["undecided"]
        ends = {"certified_accuracy": (row["verified"], row["verified"] + undecided),
                "falsified": (row["falsified"], row["falsified"] + undecided),
                "undecided": (undecided, undecided)}[metric]
        return _rounded(ends[0] / n), _rounded(ends[1] / n)
    if kind == "fairness":
        if metric == "holds":
            return figures["holds"]
        undecided = figures["undecided_share"]
        share = figures[metric]
        return (share, share) if metric == "undecided_share" else (share, _rounded(share + undecided))
    if metric in ("holds", "parity"):
        return figures.get(metric)
    value = figures.get(metric)
    return None if value is None else (float(value), float(value))


def judge(requirement: Requirement, value, baseline=None) -> dict:
    """One requirement's row of the gate result: the figures it saw and its outcome, with a message."""
    if requirement.vs_baseline:
        value = _difference(value, baseline)
    threshold = requirement.threshold
    if isinstance(threshold, bool):
        outcome = INCONCLUSIVE if value is None else PASS if value == threshold else FAIL
        shown = "undecided" if value is None else str(value).lower()
        row = {"op": "==", "threshold": threshold, "value": value, "range": None}
        message = f"{requirement.label} is {shown}, required {str(threshold).lower()}"
    else:
        outcome = _judge_interval(threshold, value)
        low, high = value if value is not None else (None, None)
        row = {"op": threshold.op, "threshold": threshold.number, "value": low,
               "range": None if value is None else [low, high]}
        message = f"{requirement.label} {_show(value)}, required {threshold}"
    if outcome == INCONCLUSIVE and value is not None and not isinstance(threshold, bool):
        message += " (undecided samples or partitions could go either way)"
    baseline_value = None if baseline is None or isinstance(baseline, bool) else baseline[0]
    return {"metric": requirement.label, **row, "baseline": baseline_value, "outcome": outcome, "message": message}


def combine(outcomes) -> str:
    """A check (or a gate) fails if anything failed, is inconclusive if anything was, else passes."""
    outcomes = list(outcomes)
    if FAIL in outcomes or "error" in outcomes:
        return FAIL
    return INCONCLUSIVE if INCONCLUSIVE in outcomes else PASS


def _judge_interval(threshold: Threshold, value: Interval | None) -> str:
    if value is None:
        return INCONCLUSIVE
    low, high = value
    if threshold.op == "==":
        if low == high:
            return PASS if threshold.holds(low) else FAIL
        return INCONCLUSIVE if low <= threshold.number <= high else FAIL
    worst, best = (low, high) if threshold.op in (">=", ">") else (high, low)
    if threshold.holds(worst):
        return PASS
    return FAIL if not threshold.holds(best) else INCONCLUSIVE


def _difference(value, baseline) -> Interval | None:
    if value is None or baseline is None or isinstance(value, bool) or isinstance(baseline, bool):
        return None
    return _rounded(value[0] - baseline[1]), _rounded(value[1] - baseline[0])


def _rounded(value: float) -> float:
    """Figures are counts over samples or shares of a domain: 12 significant digits are all they carry, and
    rounding keeps 0.85 - 0.90 equal to -0.05 when a rule compares with it."""
    return float(f"{value:.12g}")


def _show(value: Interval | None) -> str:
    if value is None:
        return "is unknown"
    low, high = value
    return f"is {low:.4g}" if low == high else f"lies in [{low:.4g}, {high:.4g}]"


def eps_key(eps: float | None) -> str:
    return f"{eps:g}"
