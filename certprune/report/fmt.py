"""How figures read in every output: percentages, counts, seconds, eps and its unit, verdict words."""
from __future__ import annotations

TABLES = ("german", "adult", "bank")
OUTCOME_WORDS = {"pass": "pass", "fail": "FAIL", "inconclusive": "inconclusive", "error": "error", None: "—"}
DASH = "—"


def pct(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{100 * value:.{digits}f}%"


def count(value: int | None) -> str:
    return DASH if value is None else f"{int(value):,}"


def seconds(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{1000 * value:.0f} ms" if value < 1 else f"{value:.1f} s" if value < 600 else f"{value / 60:.1f} min"


def delta_pp(value: float | None, reference: float | None) -> str:
    """The difference in percentage points, signed; empty when either side is missing or it is zero."""
    if value is None or reference is None or round(100 * (value - reference), 1) == 0:
        return ""
    return f"{100 * (value - reference):+.1f} pp".replace("-", "−")


def eps_unit(data: str) -> str:
    """What eps measures for a data set (the unit of certify's --eps)."""
    if data == "mnist":
        return "pixel intensity, images scaled to [0, 1]"
    if data in TABLES:
        return "fraction of each feature's range"
    return "L∞ radius in input units"


def eps_label(data: str, eps: float) -> str:
    return f"{data} ε={eps:g}"


def verdict(figures: dict) -> str:
    """A property's verdict in words: holds / violated / undecided."""
    holds = figures.get("holds")
    return "holds" if holds is True else "violated" if holds is False else "undecided"


def number(value) -> str:
    """A requirement's value or threshold."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def cell(text) -> str:
    """Text in a Markdown table cell: a pipe would end the cell, a newline the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")
