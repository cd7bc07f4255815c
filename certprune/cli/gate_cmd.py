"""`certprune gate POLICY.yaml`: may this model ship? Exit 0 pass, 10 a check failed, 20 inconclusive, 2 bad input."""
from __future__ import annotations

import click

from certprune.cli.cluster_option import cluster_option
from certprune.cli.params import OUTPUT, threads_option, use_threads
from certprune.gate.cache import DEFAULT_FOLDER
from certprune.gate.outputs import write_outputs
from certprune.gate.run import run_gate
from certprune.progress import ProgressBars


@click.command("gate")
@click.argument("policy", type=click.Path(dir_okay=False))
@click.option("--model", type=click.Path(dir_okay=False), default=None, help="Gate this model instead of the policy's.")
@click.option("--junit", "junit_path", type=OUTPUT, default=None,
              help="JUnit XML, one testcase per check; counterexamples go beside it.")
@click.option("--json", "json_path", type=OUTPUT, default=None, help="Every figure, as JSON.")
@click.option("--markdown", "markdown_path", type=OUTPUT, default=None,
              help="A Markdown table (also appended to $GITHUB_STEP_SUMMARY when set).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=DEFAULT_FOLDER, show_default=True,
              help="Result cache keyed by the sha256 of model, property/data, settings and version.")
@click.option("--no-cache", is_flag=True, help="Run every check afresh and store nothing.")
@cluster_option("certify samples and fairness partitions")
@threads_option
@click.option("--quiet", is_flag=True, help="No progress bars (for logs).")
def command(policy, model, junit_path, json_path, markdown_path, cache_dir, no_cache, cluster, threads,
            quiet) -> int:
    """Run every check of POLICY on its model and judge the requirements."""
    use_threads(threads)
    bars = ProgressBars(enabled=not quiet)
    try:
        result = run_gate(policy, model=model, cache_dir=None if no_cache else cache_dir, progress=bars.update,
                          cluster=cluster)
    finally:
        bars.close()
    write_outputs(result, json_path=json_path, junit_path=junit_path, markdown_path=markdown_path)
    for check in result["checks"]:
        cached = ", cached" if check["cached"] else ""
        click.echo(f"{check['outcome'].upper():>12}  {check['name']} ({check['seconds']:.1f} s{cached}): "
                   f"{check['message']}")
        for example in check["counterexamples"][:3]:
            click.echo(f"{'':>14}counterexample {example['label']}" +
                       (f" -> {example['file']}" if example.get("file") else ""))
        if len(check["counterexamples"]) > 3:
            click.echo(f"{'':>14}and {len(check['counterexamples']) - 3} more (all in the JSON, JUnit and markdown "
                       "outputs)")
    click.echo(f"gate: {result['outcome'].upper()} (exit {result['exit_code']}) in {result['seconds']:.1f} s")
    return result["exit_code"]
