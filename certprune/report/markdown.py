"""The report as Markdown: the summary table and one line per check and model (for a CI job summary or a PR)."""
from __future__ import annotations

from certprune.report import fmt
from certprune.report.load import ModelResult
from certprune.report.summary import checks_by_name, default_title, reference_note, summarize
from certprune.report.table import summary_lines

OPS = {">=": "≥", "<=": "≤", "==": "=", ">": ">", "<": "<"}


def markdown_report(models: list[ModelResult], title: str | None = None) -> str:
    title = title or default_title(models)
    parts = [f"# {fmt.cell(title)}", "", fmt.cell(reference_note(models)), "",
             summary_table(models), ""]
    checks = checks_table(models)
    if checks:
        parts += ["## Checks", "", checks, ""]
    return "\n".join(parts)


def summary_table(models: list[ModelResult]) -> str:
    rows = summarize(models)
    lines = ["| figure | " + " | ".join(fmt.cell(m.name + (" (baseline)" if m.baseline_only else ""))
                                         for m in models) + " |",
             "|---|" + "---:|" * len(models)]
    group = None
    for line in summary_lines(rows):
        if line.group != group:
            group = line.group
            lines.append(f"| **{fmt.cell(group)}** |" + " |" * len(models))
        cells = [c + (f" ({d})" if d else "") for c, d in zip(line.cells, line.deltas)]
        lines.append(f"| {fmt.cell(line.label)} | " + " | ".join(fmt.cell(c) for c in cells) + " |")
    return "\n".join(lines)


def checks_table(models: list[ModelResult]) -> str:
    """One line per check and model: outcome, time, requirements with values, counterexamples."""
    lines = []
    for name, runs in checks_by_name(models).items():
        for model, check in runs:
            if model.baseline_only and not check.get("requirements"):
                continue      # a baseline's figures are in the summary; it has nothing judged
            requirements = "; ".join(_requirement(r) for r in check.get("requirements", [])) or \
                fmt.cell(check.get("message") or "")
            examples = len(check.get("counterexamples") or [])
            lines.append(f"| {fmt.cell(name)} | {check['kind']} | {fmt.cell(model.name)} | "
                         f"{fmt.OUTCOME_WORDS.get(check.get('outcome'), check.get('outcome'))} | "
                         f"{_time(check)} | {requirements} | {examples or ''} |")
    if not lines:
        return ""
    return "\n".join(["| check | kind | model | outcome | time | requirements | counterexamples |",
                      "|---|---|---|---|---:|---|---:|", *lines])


def _requirement(r: dict) -> str:
    word = fmt.OUTCOME_WORDS.get(r.get("outcome"), r.get("outcome"))
    return fmt.cell(f"{r['metric']} {OPS.get(r['op'], r['op'])} {fmt.number(r['threshold'])}: "
                 f"{fmt.number(r.get('value'))} ({word})")


def _time(check: dict) -> str:
    return "cached" if check.get("cached") else fmt.seconds(check.get("seconds"))
