"""Entry point: the command group, and the one place where user errors become exit code 2."""
from __future__ import annotations

import importlib
import os
import sys
import warnings

import click

from certprune.errors import EXIT_USAGE, CertpruneError


# command name -> "module:attribute"; a module is imported only when its command runs (or help lists it),
# so a command starts without loading what the others need (torch, onnx, the solvers)
COMMANDS = {
    "inspect": "certprune.cli.inspect_cmd:inspect", "bounds": "certprune.cli.bounds_cmd:command",
    "verify": "certprune.cli.verify_cmd:command", "certify": "certprune.cli.certify_cmd:command",
    "batch": "certprune.cli.batch_cmd:command", "prune": "certprune.cli.prune_cmd:command",
    "gate": "certprune.cli.gate_cmd:command", "fairness-template": "certprune.cli.template_cmd:command",
    "report": "certprune.cli.report_cmd:command",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="certprune")
def cli() -> None:
    """certprune: make ReLU networks smaller and provably trustworthy.

    Exit codes: 0 holds / passed, 10 violated, 20 unknown or timeout, 2 usage or input error.
    """


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line (no traceback) and exit with 2."""
    # numpy's BLAS threads, like torch's (``--threads``), only wait for each other on a busy machine: the
    # small products of the numpy fast path ran 2-4x slower with two threads on 2 loaded cores. Read when
    # numpy loads, which the commands do after this point.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    warnings.formatwarning = _one_line_warning
    try:
        result = cli.main(args=argv, prog_name="certprune", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.UsageError as error:  # one line, as every user error: what is wrong and where help is
        where = f"{error.ctx.command_path} --help" if error.ctx is not None else "certprune --help"
        click.echo(f"certprune: error: {error.format_message()} (see '{where}')", err=True)
        return EXIT_USAGE
    except click.ClickException as error:
        error.show()
        return EXIT_USAGE
    except click.exceptions.Abort as abort:
        click.echo("certprune: interrupted" + _interrupt_hint(abort.__cause__, argv if argv is not None
                                                               else sys.argv[1:]), err=True)
        return 130
    except CertpruneError as error:
        click.echo(f"certprune: error: {error}", err=True)
        return EXIT_USAGE
    return int(result or 0)


def _interrupt_hint(cause: BaseException | None, argv: list[str]) -> str:
    """Where the finished results of a run without ``--journal`` were kept (``journal.keep_on_interrupt``), and
    how to continue; for prune, which keeps its rounds only when asked, how to keep them next time."""
    from certprune.journal import Interrupted  # numpy: not loaded for the commands that do not need it

    if isinstance(cause, Interrupted):
        if cause.kept is None:
            return f"; {cause.count} finished result(s) could not be kept: {cause.failure}"
        return (f"; {cause.count} finished result(s) kept in {cause.kept}: run the same command with "
                f"--journal {cause.kept} --resume to continue")
    command = next((a for a in argv if not a.startswith("-")), None)
    given = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--journal"), None) or \
        next((a.split("=", 1)[1] for a in argv if a.startswith("--journal=")), None)
    what = "rounds" if command == "prune" else "results"
    if given is not None and command in ("prune", "certify", "batch", "verify"):
        return f"; finished {what} are kept in {given}: run the same command with --resume to continue" \
            if "--resume" not in argv else f"; finished {what} are kept in {given}: run it again to continue"
    if command == "prune":
        return "; finished rounds were not kept: pass --journal FILE to keep them, and --resume to continue"
    return ""


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """What a warning says, for a user: no source file or line of certprune's own code."""
    return f"certprune: warning: {message}\n"


if __name__ == "__main__":
    sys.exit(main())
