"""`certprune report INPUT [INPUT ...] -o report.html`: compare models from result files, or gate models now."""
from __future__ import annotations

from pathlib import Path

import click

from certprune.cli.params import check_writable
from certprune.errors import CertpruneError
from certprune.journal import write_atomic
from certprune.progress import ProgressBars


@click.command("report")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The HTML report: one self-contained file (inline CSS and SVG plots, no network request).")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the summary and checks as Markdown.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Also write one row per model, one column per figure.")
@click.option("--policy", type=click.Path(dir_okay=False), default=None,
              help="Gate policy run on every .onnx input (what the cache holds is read back).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
              help="The gate's result cache (default: the gate's own, .certprune-cache).")
@click.option("--no-cache", is_flag=True, help="Gate every .onnx input afresh and store nothing.")
@click.option("--title", default=None, help="The report's title (default: the models compared).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(inputs, output, markdown_path, csv_path, policy, cache_dir, no_cache, title, quiet) -> int:
    """Compare models: INPUT is a result JSON (gate, certify or verify --json) or a model .onnx (needs --policy).

    Differences refer to each model's gate baseline, else to the first model. Exit 0 when the report is written,
    2 on bad input.
    """
    from certprune.report.csv_table import csv_report
    from certprune.report.html import html_report
    from certprune.report.load import merge, parts_of, read_result
    from certprune.report.markdown import markdown_report

    if Path(output).suffix.lower() in (".md", ".csv", ".json", ".txt"):  # -o writes HTML whatever the name
        raise CertpruneError(f"-o {output}: -o writes the HTML report, name it .html (Markdown: --markdown FILE, "
                             "CSV: --csv FILE)")
    outputs = {"report": output, "Markdown": markdown_path, "CSV": csv_path}
    for what, path in outputs.items():
        if path:
            check_writable(path, what)
    parts = []
    for path in inputs:
        if path.lower().endswith(".onnx"):
            parts += [(path, part) for part in parts_of(_gate(path, policy, cache_dir, no_cache, quiet), path)]
        elif path.lower().endswith(".json"):
            parts += [(path, part) for part in read_result(path)]
        else:
            raise CertpruneError(f"{path}: expected a result .json or a model .onnx")
    models = merge(parts)
    texts = {output: html_report(models, title)}
    if markdown_path:
        texts[markdown_path] = markdown_report(models, title)
    if csv_path:
        texts[csv_path] = csv_report(models)
    for path, text in texts.items():
        write_atomic(path, text)
    click.echo(f"report on {len(models)} model{'s' * (len(models) != 1)}: " + ", ".join(texts))
    return 0


def _gate(model: str, policy: str | None, cache_dir: str | None, no_cache: bool, quiet: bool) -> dict:
    """The gate's result for ``model`` under ``policy``: cached checks are read back, the rest run now."""
    if policy is None:
        raise CertpruneError(f"{model}: a model needs --policy POLICY.yaml (the checks to run on it)")
    if not Path(model).is_file():
        raise CertpruneError(f"{model}: no such model file")
    try:
        from certprune.gate.cache import DEFAULT_FOLDER
        from certprune.gate.run import run_gate
    except ImportError:
        raise CertpruneError("running a policy needs `certprune gate`, which this installation lacks; "
                             "give result .json files instead") from None
    bars = ProgressBars(enabled=not quiet)
    try:
        return run_gate(policy, model=model, cache_dir=None if no_cache else cache_dir or DEFAULT_FOLDER,
                        progress=bars.update)
    finally:
        bars.close()
