"""The report's plots as SVG strings (matplotlib, imported only when a plot is drawn; no GUI backend).

Every model keeps one colour from the Okabe-Ito palette (safe for the common colour-vision deficiencies)
in every plot, and a second cue (marker, line style or hatch) so nothing depends on colour alone.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from html import escape

import numpy as np

from certprune.report.fmt import eps_unit
from certprune.report.summary import Row, data_sets, undecided_share

OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINES = ("-", "--", ":", "-.")
HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "++", "--")
STATUS = (("certified", "#009E73", ""), ("falsified", "#D55E00", "//"), ("undecided", "#E69F00", ".."))
RC = {"svg.hashsalt": "certprune-report", "svg.fonttype": "path", "font.size": 10, "axes.titlesize": 10.5,
      "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3}


@dataclass(frozen=True)
class Plot:
    """A figure with a title saying what it compares and a caption saying how to read it."""

    title: str
    caption: str
    svg: str


def plots(rows: list[Row]) -> list[Plot]:
    """Every plot the rows have data for, in reading order."""
    out = [certified_vs_eps(rows, data) for data in data_sets(rows)]
    out.append(size_vs_certified(rows))
    out += [unstable_per_layer(rows, data) for data in data_sets(rows)]
    out += [time_per_sample(rows, data) for data in data_sets(rows)]
    out.append(fairness_shares(rows))
    return [plot for plot in out if plot is not None]


def colour(index: int) -> str:
    return OKABE_ITO[index % len(OKABE_ITO)]


def render(draw, title: str, size: tuple[float, float]) -> str:
    """Run ``draw(figure)`` and return the figure as an inline <svg> element (no XML prolog, no date)."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(RC):
        figure = Figure(figsize=size, layout="constrained")
        draw(figure)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    svg = text[text.index("<svg"):]
    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(title)}" ', 1)


def _series(rows: list[Row], data: str):
    """(row index, row, [(eps, entry)] sorted by eps) for the models with figures on ``data``."""
    for i, row in enumerate(rows):
        points = sorted((eps, entry) for (d, eps), entry in row.robust.items() if d == data)
        if points:
            yield i, row, points


def certified_vs_eps(rows: list[Row], data: str) -> Plot:
    series = list(_series(rows, data))
    samples = sorted({entry["samples"] for _, _, points in series for _, entry in points})
    title = f"Certified accuracy vs ε on {data} ({'/'.join(map(str, samples))} samples per ε)"

    def draw(figure):
        ax = figure.subplots()
        for i, row, points in series:
            ax.plot([eps for eps, _ in points], [100 * e["certified_accuracy"] for _, e in points],
                    color=colour(i), marker=MARKERS[i % len(MARKERS)], linestyle=LINES[i % len(LINES)],
                    label=row.model.name)
        ax.set(xlabel=f"ε, L∞ radius ({eps_unit(data)})", ylabel="certified accuracy (% of samples)",
               ylim=(0, 102), title=title)
        ax.legend(title="model", frameon=False)

    return Plot(title, "Share of the samples proven robust at each radius; higher is better. A sample that is "
                "misclassified, falsified or undecided counts as not certified.", render(draw, title, (6.4, 3.6)))


def size_vs_certified(rows: list[Row]) -> Plot | None:
    points = [(i, row, key, entry) for i, row in enumerate(rows) if row.parameters
              for key, entry in sorted(row.robust.items())]
    if not points:
        return None
    keys = sorted({key for _, _, key, _ in points})
    title = "Model size vs certified accuracy"

    def draw(figure):
        ax = figure.subplots()
        for k, key in enumerate(keys):
            line = sorted((row.parameters, 100 * e["certified_accuracy"]) for _, row, kk, e in points if kk == key)
            ax.plot(*zip(*line), color="#777777", linewidth=0.8, marker=MARKERS[k % len(MARKERS)],
                    markerfacecolor="none", markeredgecolor="#777777", label=f"{key[0]} ε={key[1]:g}")
        for i, row, key, entry in points:
            ax.plot(row.parameters, 100 * entry["certified_accuracy"], linestyle="none", color=colour(i),
                    marker=MARKERS[keys.index(key) % len(MARKERS)], markersize=8)
        sizes = [row.parameters for _, row, _, _ in points]
        if max(sizes) / min(sizes) > 10:
            ax.set_xscale("log")
        ax.margins(x=0.15)
        ax.set(xlabel="parameters (count)", ylabel="certified accuracy (% of samples)", ylim=(0, 112), title=title)
        ax.set_yticks(range(0, 101, 20))
        ax.legend(title="data and ε", frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
        middle = (min(sizes) * max(sizes)) ** 0.5
        for i, row in {i: row for i, row, _, _ in points}.items():
            left = row.parameters <= middle           # names point inwards, away from the axes' edges
            top = 100 * max(e["certified_accuracy"] for e in row.robust.values())
            ax.annotate(row.model.name, (row.parameters, top), textcoords="offset points",
                        xytext=(6 if left else -6, 7), ha="left" if left else "right", color=colour(i), fontsize=8)

    return Plot(title, "Each model at each ε: further left is smaller, higher is more robust. Points in a model's "
                "colour, one marker per ε; grey lines join the models at one ε.", render(draw, title, (6.4, 3.8)))


def unstable_per_layer(rows: list[Row], data: str) -> Plot | None:
    """Grouped bars per ReLU layer, one small panel per ε."""
    means = {(i, eps): _mean_unstable(entry["records"]) for i, _, points in _series(rows, data)
             for eps, entry in points}
    means = {key: value for key, value in means.items() if value is not None}
    if not means:
        return None
    eps_values = sorted({eps for _, eps in means})
    models = sorted({i for i, _ in means})
    title = f"Unstable ReLUs per layer on {data} (mean over samples, CROWN bounds)"

    def draw(figure):
        axes = np.atleast_1d(figure.subplots(1, len(eps_values), sharey=True))
        width = 0.8 / len(models)
        for ax, eps in zip(axes, eps_values):
            for slot, i in enumerate(models):
                values = means.get((i, eps))
                if values is not None:
                    x = np.arange(1, len(values) + 1) + (slot - (len(models) - 1) / 2) * width
                    ax.bar(x, values, width, color=colour(i), hatch=HATCHES[i % len(HATCHES)],
                           edgecolor="white", label=rows[i].model.name)
            ax.set(title=f"ε = {eps:g}", xlabel="ReLU layer (input side first)")
            ax.set_xticks(range(1, max(len(v) for v in means.values()) + 1))
        axes[0].set_ylabel("unstable ReLUs per sample (count)")
        axes[0].legend(frameon=False)
        figure.suptitle(title)

    return Plot(title, "ReLUs whose input can take both signs inside a sample's ball (CROWN bounds): each is a "
                "case split for the complete search, so fewer is faster to verify. Misclassified samples are "
                "left out.", render(draw, title, (max(6.4, 2.6 * len(eps_values)), 3.4)))


def _mean_unstable(records: list[dict]) -> np.ndarray | None:
    counts = [r["unstable"] for r in records if r.get("unstable")]
    if not counts:
        return None
    depth = max(len(c) for c in counts)
    return np.array([c + [0] * (depth - len(c)) for c in counts], dtype=float).mean(axis=0)


def time_per_sample(rows: list[Row], data: str) -> Plot | None:
    """Box plots of per-sample seconds, grouped by ε, one box per model."""
    times = {(i, eps): [r["seconds"] for r in entry["records"] if r["status"] != "misclassified"]
             for i, _, points in _series(rows, data) for eps, entry in points}
    times = {key: value for key, value in times.items() if value}
    if not times:
        return None
    eps_values = sorted({eps for _, eps in times})
    models = sorted({i for i, _ in times})
    title = f"Verification time per sample on {data} (distribution over samples)"

    def draw(figure):
        ax = figure.subplots()
        width = 0.8 / len(models)
        for slot, i in enumerate(models):
            keys = [eps for eps in eps_values if (i, eps) in times]
            x = [eps_values.index(eps) + (slot - (len(models) - 1) / 2) * width for eps in keys]
            parts = ax.boxplot([times[(i, eps)] for eps in keys], positions=x, widths=width * 0.9,
                               patch_artist=True, showfliers=True, manage_ticks=False)
            for box in parts["boxes"]:
                box.set(facecolor=colour(i), alpha=0.75, hatch=HATCHES[i % len(HATCHES)])
            for median in parts["medians"]:
                median.set(color="black")
            ax.plot([], [], color=colour(i), linewidth=8, label=rows[i].model.name)
        values = [t for ts in times.values() for t in ts]
        if max(values) / max(min(values), 1e-6) > 50:
            ax.set_yscale("log")
        ax.set_xticks(range(len(eps_values)), [f"ε = {eps:g}" for eps in eps_values])
        ax.set(ylabel="seconds per sample", xlabel=f"L∞ radius ({eps_unit(data)})", title=title)
        ax.legend(frameon=False)

    return Plot(title, "Wall-clock seconds to decide each sample (bounds, attack and branch and bound); boxes "
                "span the middle half, the line is the median. Misclassified samples are left out.",
                render(draw, title, (6.4, 3.6)))


def fairness_shares(rows: list[Row]) -> Plot | None:
    """Stacked horizontal bars per model and fairness property: certified / falsified / undecided."""
    bars = [(i, row.model.name, name, figures) for i, row in enumerate(rows)
            for name, figures in row.fairness.items()]
    if not bars:
        return None
    title = "Individual fairness: the input domain by verdict"

    def draw(figure):
        ax = figure.subplots()
        y = np.arange(len(bars))[::-1]
        left = np.zeros(len(bars))
        for status, fill, hatch in STATUS:
            shares = np.array([100 * _share(figures, status) for *_, figures in bars])
            ax.barh(y, shares, left=left, color=fill, hatch=hatch, edgecolor="white", label=status)
            for yy, start, share, (*_, figures) in zip(y, left, shares, bars):
                if share >= 8:
                    ax.text(start + share / 2, yy, f"{figures[_count_key(status)]:,} part.", ha="center",
                            va="center", fontsize=8, color="black")
            left += shares
        ax.set_yticks(y, [f"{model}\n{name}" for _, model, name, _ in bars])
        for tick, (i, *_rest) in zip(ax.get_yticklabels(), bars):
            tick.set_color(colour(i))
        ax.set(xlabel="share of the input domain (% of its points)", xlim=(0, 100), title=title)
        ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))

    return Plot(title, "Each bar is one model on one fairness property; labels inside give partitions. "
                "Certified partitions are proven fair for every pair of inputs in them, falsified ones hold a "
                "counterexample pair replayed on the model.", render(draw, title, (6.4, 1.4 + 0.55 * len(bars))))


def _share(figures: dict, status: str) -> float:
    if status == "undecided":
        return max(0.0, undecided_share(figures))
    return float(figures.get(f"{status}_share", 0.0))


def _count_key(status: str) -> str:
    return "unknown" if status == "undecided" else status
