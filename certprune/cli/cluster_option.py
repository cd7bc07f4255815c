"""The --cluster option shared by `verify` and `certify`: checked before any work, Dask imported only to run."""
from __future__ import annotations

import click


def _check(ctx, param, value):
    from certprune.cluster import check_spec

    return None if value is None else check_spec(value)


def cluster_option(what: str):
    return click.option("--cluster", default=None, metavar="local:N|tcp://HOST:PORT", callback=_check,
                        help=f"Run {what} on Dask (needs certprune[dask]): a local cluster of N workers or a "
                             "running scheduler.")
