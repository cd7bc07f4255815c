"""One self-contained HTML page: inline CSS, plots inline as SVG, and a policy that forbids any request."""
from __future__ import annotations

import re
from html import escape

from certprune.report import fmt
from certprune.report.drilldown import checks_section, model_label
from certprune.report.load import ModelResult
from certprune.report.plots import Plot, colour, plots
from certprune.report.summary import Row, checks_by_name, default_title, reference_note, summarize
from certprune.report.table import Line, summary_lines
from certprune.version import __version__

# default-src 'none': the browser itself refuses any fetch (fonts, scripts, images other than data: URIs).
POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
:root { --ink: #1b1b1b; --muted: #5f6368; --line: #d9dce1; --head: #f3f4f6;
        --good: #009E73; --bad: #D55E00; --warn: #E69F00; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 24px 28px 48px; color: var(--ink); background: #fff;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { margin-top: 36px; border-bottom: 2px solid var(--line); }
h3 { margin: 28px 0 8px; } h4 { margin: 14px 0 6px; font-size: 1em; }
.muted, .meta { color: var(--muted); } .meta { margin: 0 0 12px; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 8px 0 4px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
thead th { background: var(--head); }
table.summary td { text-align: right; min-width: 9em; }
table.summary tr.group th { background: var(--head); font-weight: 600; text-align: left; }
table.summary tbody th { font-weight: normal; }
.delta { font-size: 0.8em; color: var(--muted); margin-left: 6px; display: inline-block; min-width: 4.5em; }
td.good { color: var(--good); font-weight: 600; } td.bad { color: var(--bad); font-weight: 600; }
td.warn { color: #8a5a00; font-weight: 600; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 0.85em; font-weight: 600;
         border: 1px solid var(--line); }
.badge.good { background: var(--good); color: #fff; border-color: var(--good); }
.badge.bad { background: var(--bad); color: #fff; border-color: var(--bad); }
.badge.warn { background: var(--warn); color: #000; border-color: var(--warn); }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 6px; border-radius: 2px;
          vertical-align: baseline; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 18px; }
figure { margin: 0; } figure.plot { border: 1px solid var(--line); border-radius: 6px; padding: 10px; }
figure svg { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: var(--muted); margin-top: 6px; }
ul.reqs { margin: 0; padding-left: 0; list-style: none; } ul.reqs li { margin: 2px 0; }
code { font-size: 0.9em; background: var(--head); padding: 0 4px; border-radius: 3px; }
.kind { font-size: 0.7em; font-weight: normal; color: var(--muted); border: 1px solid var(--line);
        border-radius: 9px; padding: 1px 8px; vertical-align: middle; }
details { margin: 8px 0; } summary { cursor: pointer; }
details.cex > summary { font-weight: 600; }
.examples { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 12px; }
.scroll { overflow-x: auto; }
table.inputs td { word-break: break-all; }
.example { min-width: 0; overflow-x: auto; border: 1px solid var(--line); border-left: 4px solid var(--bad);
           border-radius: 4px; padding: 4px 12px 8px; }
.pair { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure.input img { display: block; border: 1px solid var(--line); image-rendering: pixelated; }
table.values, table.twins { font-size: 0.85em; margin: 0; }
table.values th, table.values td, table.twins th, table.twins td { padding: 1px 8px; }
table.values th, table.twins th { font-weight: normal; color: var(--muted); }
table.values td, table.twins td { text-align: right; }
table.summary thead th, table.summary tbody th, td.model { white-space: nowrap; }
tr.diff td, tr.decided td { background: #fde9dc; font-weight: 600; }
tr.out th { color: var(--ink); }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 4px; }
pre { background: var(--head); padding: 8px; overflow-x: auto; font-size: 0.85em; max-height: 18em; }
"""


def html_report(models: list[ModelResult], title: str | None = None) -> str:
    """The whole page for these models; differences refer to each model's gate baseline, else the first model."""
    rows = summarize(models)
    colours = {row.model.name: colour(i) for i, row in enumerate(rows)}
    title = title or default_title(models)
    checks = checks_by_name(models)
    body = (_header(title, models, bool(checks)) + _summary(rows, colours) + _plots(plots(rows))
            + checks_section(checks, colours) + _sources(models, colours))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="icon" href="data:,">\n<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n'
            f"<body>\n{body}\n<footer class=\"muted\"><p>Written by certprune {__version__}. Every figure comes "
            f"from the result files listed above; counterexamples were replayed on each model with onnxruntime "
            f"before they were reported.</p></footer>\n</body>\n</html>\n")


def _header(title: str, models: list[ModelResult], has_checks: bool) -> str:
    sources = sorted({s for m in models for s in m.sources})
    sections = [("summary", "Summary"), ("plots", "Plots")] + [("checks", "Checks")] * has_checks
    links = "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in sections + [("inputs", "Inputs")])
    return (f"<header><h1>{escape(title)}</h1><p class=\"meta\">{len(models)} model"
            f"{'s' if len(models) != 1 else ''} from {len(sources)} result file{'s' if len(sources) != 1 else ''}. "
            f"{escape(reference_note(models))}</p><nav>{links}</nav></header>")


def _summary(rows: list[Row], colours: dict[str, str]) -> str:
    head = "".join(f"<th>{model_label(r.model, colours)}</th>" for r in rows)
    body, group = [], None
    for line in summary_lines(rows):
        if line.group != group:
            group = line.group
            body.append(f'<tr class="group"><th colspan="{len(rows) + 1}">{escape(group)}</th></tr>')
        body.append(_summary_line(line))
    note = ("Shares are of the samples checked (robustness) or of the points of the input domain (fairness); "
            f"pp = percentage points; ×k = k times the reference; {fmt.DASH} = not measured for that model.")
    return (f'<section id="summary"><h2>Summary</h2><div class="scroll"><table class="summary"><thead><tr>'
            f'<th>figure</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            f'<p class="muted">{escape(note)}</p></section>')


def _summary_line(line: Line) -> str:
    cells = "".join(f'<td class="{tone}">{escape(cell)}'
                    + (f'<span class="delta">{escape(delta)}</span>' if delta else "") + "</td>"
                    for cell, delta, tone in zip(line.cells, line.deltas, line.tones))
    return f"<tr><th>{escape(line.label)}</th>{cells}</tr>"


def _plots(figures: list[Plot]) -> str:
    if not figures:
        return '<section id="plots"><h2>Plots</h2><p class="muted">No figures to plot.</p></section>'
    items = "".join(f'<figure class="plot">{scoped(p.svg, f"p{i}-")}<figcaption><b>{escape(p.title)}.</b> '
                    f"{escape(p.caption)}</figcaption></figure>" for i, p in enumerate(figures))
    return f'<section id="plots"><h2>Plots</h2><div class="plots">{items}</div></section>'


def scoped(svg: str, prefix: str) -> str:
    """Give an inline SVG's ids a prefix so several SVGs in one page never share an id."""
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}\1"', svg)
    svg = re.sub(r'url\(#([^)]+)\)', rf'url(#{prefix}\1)', svg)
    return re.sub(r'href="#([^"]+)"', rf'href="#{prefix}\1"', svg)


def _sources(models: list[ModelResult], colours: dict[str, str]) -> str:
    rows = "".join(f"<tr><td>{model_label(m, colours)}</td><td><code>{escape(m.path)}</code></td>"
                   f"<td><code>{escape((m.sha256 or fmt.DASH)[:16])}</code></td>"
                   f"<td>{'<br>'.join(escape(s) for s in m.sources)}</td></tr>" for m in models)
    return (f'<section id="inputs"><h2>Inputs</h2><div class="scroll"><table class="inputs"><thead><tr><th>model</th>'
            f"<th>file</th><th>sha256 (first 16)</th><th>result files</th></tr></thead><tbody>{rows}</tbody></table>"
            "</div></section>")
