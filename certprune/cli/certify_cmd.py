"""`certprune certify MODEL --data NAME|FILE --eps E`: certified accuracy over the first N test samples."""
from __future__ import annotations

import warnings
from dataclasses import asdict

import click

from certprune.bab.certify import samples_digests, samples_from_data
from certprune.bab.search import SearchSettings
from certprune.cli.cluster_option import cluster_option
from certprune.cli.data_options import data_options, load
from certprune.cli.params import FINITE, OUTPUT, SECONDS, threads_option, use_threads
from certprune.cli.results import write_json
from certprune.cli.robustness_run import run_samples
from certprune.data import DATA_SETS
from certprune.errors import CertpruneError
from certprune.journal import file_sha256, journal_header
from certprune.onnx_io import load_onnx


@click.command("certify")
@click.argument("model", type=click.Path(dir_okay=False))
@data_options(default="mnist")
@click.option("--eps", type=FINITE, required=True,
              help="L-inf radius: pixels for mnist, a fraction of each feature's domain width for the built-in "
                   "tables, input units for your own file.")
@click.option("-n", "count", type=int, default=100, show_default=True, help="First N test samples.")
@click.option("--timeout", type=SECONDS, default=60.0, show_default=True, help="Seconds per sample.")
@click.option("--journal", type=OUTPUT, default=None, help="JSONL journal for resuming.")
@click.option("--resume", is_flag=True)
@click.option("--json", "json_out", type=OUTPUT, default=None)
@cluster_option("the samples")
@threads_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(model, data, label, features, value_range, split, eps, count, timeout, journal, resume, json_out,
            cluster, threads, quiet) -> int:
    """Certified accuracy of MODEL: per sample verified / falsified / unknown / misclassified."""
    use_threads(threads)
    if resume and not journal:
        raise CertpruneError("--resume needs --journal FILE, the journal to continue")
    if eps < 0 or count <= 0:  # --timeout is checked by its type (SECONDS: above 0)
        raise CertpruneError("--eps must be >= 0 and -n > 0")
    network = load_onnx(model)
    chosen = load(data, "test", eps, label, features, value_range, split).take(count)
    if len(chosen) < count:
        warnings.warn(f"-n {count}: the data has {len(chosen)} test samples; certifying those")
    samples = samples_from_data(network, model, chosen, timeout)
    settings = SearchSettings(timeout=timeout)
    header = journal_header("certify", {"model": file_sha256(model, "model"), **samples_digests(samples)},
                            {"data": data if data in DATA_SETS else "file", "samples": count, "eps": eps,
                             "search": asdict(settings)})  # a file counts by its content (the digest), not its path
    report = run_samples(network, model, samples, settings, journal, resume, not quiet, header, cluster)
    totals = report.totals()
    click.echo(f"certified accuracy {totals['verified'] / totals['samples']:.1%} at eps {eps:g}")
    write_json(json_out, {"model": model, "data": data, "eps": eps, "timeout": timeout, "totals": totals,
                          "samples": report.records})
    return 0

