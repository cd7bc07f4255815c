"""`certprune batch INSTANCES.csv`: every (onnx, vnnlib, timeout) row, a table, a CSV and a journal."""
from __future__ import annotations

import csv
import io

import click

from certprune.bab.batch import batch_header, run_batch
from certprune.cli.cluster_option import cluster_option
from certprune.cli.params import OUTPUT, SECONDS
from certprune.decide import decide_vnnlib
from certprune.errors import CertpruneError
from certprune.journal import HeldJournal, Journal, keep_on_interrupt, write_atomic
from certprune.types import EXIT_CODES, Verdict


@click.command("batch")
@click.argument("instances", type=click.Path(dir_okay=False))
@click.option("--out", type=OUTPUT, default=None, help="CSV of results.")
@click.option("--journal", type=OUTPUT, default=None, help="JSONL journal for resuming.")
@click.option("--resume", is_flag=True)
@click.option("--timeout", type=SECONDS, default=None, help="Override every row's timeout (seconds).")
@cluster_option("the instances (one per task)")
def command(instances, out, journal, resume, timeout, cluster) -> int:
    """Verify a VNN-COMP instances CSV; exit 10 if any instance is sat, 20 if any is undecided (or ended in an
    error: a row whose model or property cannot be used is reported and the batch goes on). Files that do not
    exist and timeouts that are not numbers are named before any row runs (exit 2)."""
    if resume and not journal:
        raise CertpruneError("--resume needs --journal FILE, the journal to continue")
    header = batch_header(instances, timeout)
    log = Journal(journal, header) if journal else HeldJournal(header)
    records = []
    with keep_on_interrupt(log):
        for record in run_batch(instances, decide_vnnlib, log, resume, timeout, cluster=cluster):
            if not records:  # the header once the checks of the files are passed, not above an error
                click.echo(f"{'onnx':<40} {'vnnlib':<16} {'result':<8} {'expected':<9} {'seconds':>8}")
            records.append(record)
            click.echo(f"{record['onnx'].split('/')[-1][:40]:<40} {record['vnnlib'].split('/')[-1][:16]:<16} "
                       f"{record['result']:<8} {record['expected']:<9} {record['seconds']:>8.2f}"
                       + (f"  {record['error']}" if "error" in record else ""))
    records.sort(key=lambda r: r.get("row", 0))
    wrong = sum(1 for r in records if r["correct"] is False)  # None: the row expects no answer
    click.echo(f"{len(records)} instances, {wrong} disagreeing with expected, "
               f"{sum(r['seconds'] for r in records):.1f} s in total")
    if out:
        table = io.StringIO(newline="")
        fields = list(dict.fromkeys(key for record in records for key in record)) or ["onnx"]
        writer = csv.DictWriter(table, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)
        write_atomic(out, table.getvalue())
    verdicts = {r["verdict"] for r in records}
    if "falsified" in verdicts:
        return EXIT_CODES[Verdict.FALSIFIED]
    return 0 if verdicts <= {"verified"} else EXIT_CODES[Verdict.UNKNOWN]
