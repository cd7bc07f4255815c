"""Running a fairness property for the CLI: the library does the work, this prints the summary."""
from __future__ import annotations

import click

from certprune.fairness.verify import format_summary, verify_fairness


def run_fairness(model: str, property_path: str, *, timeout: float | None, jobs: int, journal: str | None,
                 resume: bool, engine: str | None, json_out: str | None, certificate: str | None,
                 progress: bool, limit: int | None = None, cluster: str | None = None) -> int:
    """Decide every partition (or ``limit`` of them), print the summary, return the exit code."""
    report = verify_fairness(model, property_path, jobs=jobs, journal_path=journal, resume=resume,
                             progress=progress, json_out=json_out, certificate_out=certificate,
                             engine=engine, timeout=timeout, limit=limit, cluster=cluster, hold_on_interrupt=True)
    click.echo(format_summary(report))
    return report.exit_code
