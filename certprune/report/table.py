"""The summary as lines (one figure each, one cell per model, the difference to a reference model), for HTML and
Markdown."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from certprune.report import fmt
from certprune.report.summary import Row, check_names, references, robust_keys, undecided_share

TONES = {"pass": "good", "fail": "bad", "inconclusive": "warn", "error": "bad",
         "holds": "good", "violated": "bad", "undecided": "warn"}


@dataclass(frozen=True)
class Line:
    """A figure for every model: ``deltas`` compare with each model's reference (``summary.references``),
    ``tones`` mark good / bad / warn."""

    group: str
    label: str
    cells: tuple[str, ...]
    tones: tuple[str, ...]
    values: tuple = ()
    delta: Callable | None = None
    deltas: tuple[str, ...] = ()


def summary_lines(rows: list[Row]) -> list[Line]:
    """Every figure some model has (a figure no model has is left out), with its differences."""
    refs = references([row.model for row in rows])
    return [replace(line, deltas=tuple("" if ref is None or line.delta is None else line.delta(v, line.values[ref])
                                       for v, ref in zip(line.values, refs)))
            for line in _lines(rows) if any(cell != fmt.DASH for cell in line.cells)]


def _lines(rows: list[Row]) -> list[Line]:
    lines = _model_lines(rows)
    for key in robust_keys(rows):
        lines += _robust_lines(rows, key)
    for name in check_names(rows, "fairness"):
        lines += _fairness_lines(rows, name)
    for name in check_names(rows, "vnnlib"):
        verdicts = [fmt.verdict(r.vnnlib[name]) if name in r.vnnlib else None for r in rows]
        lines.append(_line(f"VNN-LIB property {name}", "verdict", verdicts, lambda v: v or fmt.DASH, tone=True))
    time = _line("Time", "verification time, all checks", [r.seconds for r in rows], fmt.seconds, _delta_relative)
    lines.append(replace(time, cells=tuple(c + (f" ({r.cached} cached)" if r.cached else "")
                                           for c, r in zip(time.cells, rows))))
    return lines


def _line(group: str, label: str, values: list, text: Callable, delta: Callable | None = None,
          tone: bool = False) -> Line:
    tones = tuple(TONES.get(v, "") if tone else "" for v in values)
    return Line(group, label, tuple(text(v) for v in values), tones, tuple(values), delta)


def _model_lines(rows: list[Row]) -> list[Line]:
    group = "Model"
    lines = []
    if any(r.model.outcome for r in rows):
        lines.append(_line(group, "gate outcome", [r.model.outcome for r in rows],
                           lambda v: fmt.OUTCOME_WORDS.get(v, str(v)), tone=True))
    lines.append(_line(group, "parameters", [r.parameters for r in rows], fmt.count, _delta_relative))
    lines.append(_line(group, "FLOPs (multiply-accumulates per input)", [r.flops for r in rows], fmt.count,
                       _delta_relative))
    estimated = [r.clean_accuracy_samples for r in rows if r.clean_accuracy_samples]
    label = "clean accuracy" + (f" (* on the first {max(estimated)} test samples)" if estimated else "")
    clean = _line(group, label, [r.clean_accuracy for r in rows], fmt.pct, fmt.delta_pp)
    lines.append(replace(clean, cells=tuple(c + "*" * bool(r.clean_accuracy_samples)
                                            for c, r in zip(clean.cells, rows))))
    if any(r.parity is not None for r in rows):
        lines.append(_line(group, "matches onnxruntime (parity)", [r.parity for r in rows],
                           lambda v: fmt.DASH if v is None else "yes" if v else "NO"))
    return lines


def _robust_lines(rows: list[Row], key: tuple[str, float]) -> list[Line]:
    data, eps = key
    entries = [r.robust.get(key) for r in rows]
    samples = sorted({e["samples"] for e in entries if e})
    group = f"Robustness on {data}, ε = {eps:g} ({'/'.join(map(str, samples))} samples)"

    def figure(name):
        return [None if e is None else e[name] for e in entries]

    return [_line(group, "certified accuracy", figure("certified_accuracy"), fmt.pct, fmt.delta_pp),
            _line(group, "falsified (counterexample found)", figure("falsified_share"), fmt.pct, fmt.delta_pp),
            _line(group, "undecided (unknown or timeout)", figure("undecided_share"), fmt.pct, fmt.delta_pp),
            _line(group, "verification time", figure("seconds"), fmt.seconds, _delta_relative)]


def _fairness_lines(rows: list[Row], name: str) -> list[Line]:
    figures = [r.fairness.get(name) for r in rows]
    group = f"Fairness property {name}"

    def share(f, key):
        return None if f is None else (undecided_share(f) if key == "undecided" else f.get(f"{key}_share"))

    partitions = [None if f is None else f"{f['certified']:,} / {f['falsified']:,} / {f['unknown']:,} of "
                  f"{f['partitions']:,}" for f in figures]
    return [_line(group, "verdict", [None if f is None else fmt.verdict(f) for f in figures],
                  lambda v: v or fmt.DASH, tone=True),
            _line(group, "domain certified fair", [share(f, "certified") for f in figures], fmt.pct, fmt.delta_pp),
            _line(group, "domain falsified", [share(f, "falsified") for f in figures], fmt.pct, fmt.delta_pp),
            _line(group, "domain undecided", [share(f, "undecided") for f in figures], fmt.pct, fmt.delta_pp),
            _line(group, "partitions certified / falsified / undecided", partitions, lambda v: v or fmt.DASH)]


def _delta_relative(value, reference) -> str:
    if value is None or not reference:
        return ""
    ratio = value / reference
    if not 0.5 < ratio < 2:
        return f"×{ratio:.2g}"
    change = 100 * (ratio - 1)
    return "" if round(change) == 0 else f"{change:+.0f}%".replace("-", "−")
