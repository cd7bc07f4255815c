"""Entry point: the command group, and the one place where user errors become exit code 2."""
from __future__ import annotations

import sys

import click

from certprune.errors import CertpruneError
from certprune.types import EXIT_USAGE


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="certprune")
def cli() -> None:
    """certprune: make ReLU networks smaller and provably trustworthy.

    Exit codes: 0 holds / passed, 10 violated, 20 unknown or timeout, 2 usage or input error.
    """


def _register() -> None:
    from certprune.cli import inspect_cmd

    cli.add_command(inspect_cmd.inspect)
    for module_name in ("bounds_cmd", "verify_cmd", "certify_cmd", "batch_cmd", "prune_cmd", "gate_cmd"):
        try:
            module = __import__(f"certprune.cli.{module_name}", fromlist=["command"])
        except ModuleNotFoundError as error:
            if error.name != f"certprune.cli.{module_name}":
                raise
            continue
        cli.add_command(module.command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line (no traceback) and exit with 2."""
    _register()
    try:
        result = cli.main(args=argv, prog_name="certprune", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("certprune: interrupted", err=True)
        return 130
    except CertpruneError as error:
        click.echo(f"certprune: error: {error}", err=True)
        return EXIT_USAGE
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
