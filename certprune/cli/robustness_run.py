"""Running robustness properties for the CLI: one VNN-LIB file, or the samples of a robustness YAML."""
from __future__ import annotations

from dataclasses import asdict

import click
import numpy as np

from certprune.cli.results import exit_code, write_json
from certprune.deadline import Deadline
from certprune.decide import decide_vnnlib
from certprune.journal import HeldJournal, Journal, file_sha256, journal_header, keep_on_interrupt, write_atomic
from certprune.progress import progress_bar
from certprune.runtime import OnnxRuntimeModel
from certprune.spec.vnnlib import read_vnnlib
from certprune.types import Verdict

VNNCOMP_WORDS = {Verdict.FALSIFIED: "sat", Verdict.VERIFIED: "unsat", Verdict.UNKNOWN: "unknown",
                 Verdict.TIMEOUT: "timeout"}


def run_vnnlib(model: str, property_path: str, timeout: float | None, json_out: str | None,
               results_file: str | None, threads: int = 1, arithmetic: str = "float32") -> int:
    """Decided as ``certprune.decide.decide_vnnlib`` decides it (the fast path, then the full engine)."""
    deadline = Deadline(timeout or 60.0)  # loading and reading count against the timeout too
    result = decide_vnnlib(model, read_vnnlib(property_path), deadline, threads, arithmetic)
    word = VNNCOMP_WORDS[result.verdict]
    about = " (proven for the real-valued network)" if arithmetic == "real" and word == "unsat" else ""
    click.echo(f"{result.verdict.value} ({word}) in {deadline.elapsed():.2f} s{about}")
    lines = [word]
    if result.counterexample is not None:
        x = np.asarray(result.counterexample.inputs, dtype=np.float32)
        y = OnnxRuntimeModel(model).run_flat(x)
        click.echo("counterexample (replayed with onnxruntime): x = " + np.array2string(x, precision=6))
        click.echo("outputs: y = " + np.array2string(y, precision=6))
        body = [f"(X_{i} {v!r})" for i, v in enumerate(x.astype(float).tolist())]
        body += [f"(Y_{j} {v!r})" for j, v in enumerate(y.astype(float).tolist())]
        lines.append("(" + "\n ".join(body) + ")")
    if results_file:
        write_atomic(results_file, "\n".join(lines) + "\n")
    write_json(json_out, {"model": model, "property": property_path, "verdict": result.verdict,
                          "result": word, "arithmetic": arithmetic, "seconds": result.seconds,
                          "elapsed": deadline.elapsed(),
                          "details": dict(result.settings),
                          "counterexample": None if result.counterexample is None
                          else {"x": result.counterexample.inputs, "y": result.counterexample.outputs}})
    return exit_code(result.verdict)


def run_robustness(model: str, property_path: str, timeout: float | None, json_out: str | None,
                   journal_path: str | None, resume: bool, progress: bool, cluster: str | None = None) -> int:
    from certprune.bab.certify import samples_sha256
    from certprune.bab.search import SearchSettings
    from certprune.onnx_io import load_onnx
    from certprune.spec.robustness import instances as robustness_instances
    from certprune.spec.robustness import read_robustness

    network = load_onnx(model)
    spec = read_robustness(property_path)
    samples = robustness_instances(spec, network.input_shape, int(np.prod(network.output_shape)))
    settings = SearchSettings(timeout=timeout or spec.timeout or 60.0)
    if timeout is not None:
        samples = [s.__class__(s.index, s.x, s.label, s.lower, s.upper, timeout) for s in samples]
    header = journal_header("robustness", {"model": file_sha256(model, "model"),
                                           "property": file_sha256(property_path, "property file"),
                                           "data": samples_sha256(samples)},
                            {"eps": spec.eps, "search": asdict(settings)})
    report = run_samples(network, model, samples, settings, journal_path, resume, progress, header, cluster)
    totals = report.totals()
    write_json(json_out, {"model": model, "property": property_path, "eps": spec.eps, "totals": totals,
                          "samples": report.records})
    if totals["falsified"] or totals["misclassified"]:
        verdict = Verdict.FALSIFIED
    else:
        verdict = Verdict.VERIFIED if totals["verified"] == totals["samples"] else Verdict.UNKNOWN
    click.echo(f"result: {verdict.name} (exit {exit_code(verdict)})")
    return exit_code(verdict)


def run_samples(network, model, samples, settings, journal_path, resume, progress, header, cluster=None):
    """Certify samples with a progress bar and a journal; prints the totals table."""
    from certprune.bab.certify import certify

    journal = Journal(journal_path, header) if journal_path else HeldJournal(header)
    bar = progress_bar(len(samples), "sample", enabled=progress)

    def on_record(record):
        bar.update(1)
        bar.set_postfix_str(record["status"])

    with keep_on_interrupt(journal):
        report = certify(network, model, samples, settings, journal=journal, resume=resume, on_record=on_record,
                         cluster=cluster)
    bar.close()
    totals = report.totals()
    click.echo(f"{'samples':>8} {'verified':>9} {'(crown)':>8} {'falsified':>10} {'unknown':>8} "
               f"{'timeout':>8} {'misclass.':>10} {'seconds':>9}")
    click.echo(f"{totals['samples']:>8} {totals['verified']:>9} {totals['crown_verified']:>8} "
               f"{totals['falsified']:>10} {totals['unknown']:>8} {totals['timeout']:>8} "
               f"{totals['misclassified']:>10} {report.seconds:>9.1f}")
    return report
