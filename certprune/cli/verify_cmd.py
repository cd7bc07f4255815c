"""`certprune verify MODEL --property P`: VNN-LIB, robustness YAML or fairness YAML properties."""
from __future__ import annotations

import click

from certprune.cli.cluster_option import cluster_option
from certprune.cli.params import OUTPUT, SECONDS, threads_option, use_threads
from certprune.errors import PropertyError
from certprune.spec.text import read_text


@click.command("verify")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--property", "property_path", required=True, type=click.Path(dir_okay=False),
              help="A .vnnlib file, or a YAML property (kind: robustness or kind: fairness).")
@click.option("--timeout", type=SECONDS, default=None, help="Seconds per instance; for a fairness property, per partition (its file's "
                   "`timeout: {total: S}` bounds the whole run).")
@click.option("--json", "json_out", type=OUTPUT, default=None, help="Write a JSON report.")
@click.option("--results-file", type=OUTPUT, default=None,
              help="VNN-COMP results file: sat/unsat/unknown/timeout and the counterexample.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Parallel processes (fairness).")
@cluster_option("fairness partitions or robustness samples")
@click.option("--journal", type=OUTPUT, default=None, help="JSONL journal for resuming.")
@click.option("--resume", is_flag=True, help="Continue from the journal.")
@click.option("--engine", type=click.Choice(["auto", "z3"]), default=None, help="Fairness engine.")
@click.option("--certificate", type=OUTPUT, default=None, help="Fairness certificate JSON.")
@click.option("--limit", type=int, default=None,
              help="Fairness: run only this many partitions, spread over the domain (a quick look).")
@threads_option
@click.option("--arithmetic", type=click.Choice(["float32", "real"]), default="float32", show_default=True,
              help="VNN-LIB: what a proof is about. float32: the model as onnxruntime runs it. real: the exact "
                   "real-valued network, as VNN-COMP's verifiers prove it (see the README).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(model, property_path, timeout, json_out, results_file, jobs, cluster, journal, resume, engine,
            certificate, limit, threads, arithmetic, quiet) -> int:
    """Prove or refute PROPERTY on MODEL. Exit 0 holds, 10 violated, 20 undecided, 2 input error."""
    if limit is not None and limit <= 0:
        raise PropertyError(f"--limit must be a positive number of partitions, got {limit}")
    kind = property_kind(property_path)
    if arithmetic != "float32" and kind != "vnnlib":
        raise PropertyError(f"--arithmetic {arithmetic} applies to VNN-LIB properties only")
    if resume and not journal:
        raise PropertyError("--resume needs --journal FILE, the journal to continue")
    if kind != "fairness" and (limit is not None or jobs > 1):
        raise PropertyError(f"--{'limit' if limit is not None else 'jobs'} applies to fairness properties only")
    if kind == "vnnlib" and journal:
        raise PropertyError("--journal applies to fairness and robustness properties (a VNN-LIB property is one "
                            "question; --results-file keeps its answer)")
    if results_file and kind != "vnnlib":
        raise PropertyError("--results-file is VNN-COMP's results file of a VNN-LIB property; for a "
                            f"{kind} property use --json")
    use_threads(threads)  # fairness too: its bounds in this process ran 10x slower with torch's default threads
    if kind == "fairness":
        from certprune.cli.fairness_run import run_fairness

        return run_fairness(model, property_path, timeout=timeout, jobs=jobs, journal=journal, resume=resume,
                            engine=engine, json_out=json_out, certificate=certificate, progress=not quiet,
                            limit=limit, cluster=cluster)
    from certprune.cli.robustness_run import run_robustness, run_vnnlib

    if kind == "vnnlib":  # torch is imported only if the numpy fast path does not decide the instance
        return run_vnnlib(model, property_path, timeout, json_out, results_file, threads, arithmetic)
    return run_robustness(model, property_path, timeout, json_out, journal, resume, progress=not quiet,
                          cluster=cluster)


def property_kind(path: str) -> str:
    """vnnlib by extension; a YAML file says its kind in the ``kind`` key."""
    if path.endswith(".vnnlib"):
        return "vnnlib"
    import yaml

    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise PropertyError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if data is None:
        raise PropertyError(f"{path}: the file is empty (a property YAML starts with kind: fairness or "
                            "kind: robustness)")
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in ("fairness", "robustness"):
        raise PropertyError(f"{path}: key 'kind' must be 'fairness' or 'robustness' (got {kind!r}); "
                            "VNN-LIB files must end in .vnnlib")
    return kind

