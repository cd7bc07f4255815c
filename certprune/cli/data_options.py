"""The data options shared by `certify` and `prune`: a built-in data set or the user's own file."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from certprune.cli.params import FINITE, ordered_range
from certprune.data import DATA_SETS
from certprune.errors import CertpruneError

DATA_HELP = (f"A built-in data set ({', '.join(DATA_SETS)}) or your own .npz (x, y[, lower, upper]) or .csv/.parquet "
             "(one column per feature and a label column).")


def data_options(default: str | None = None):
    """--data (required unless it has a ``default``), --label, --features, --range, --split."""
    # click 8.3 takes an explicit default=None as a value that meets `required`: pass a default only if there is one
    data = click.option("--data", default=default, show_default=True, help=DATA_HELP) if default is not None \
        else click.option("--data", required=True, help=DATA_HELP)
    options = [
        data,
        click.option("--label", default=None, help="Label column of a .csv (default: label, y or target)."),
        click.option("--features", default=None, help="Comma-separated feature columns of a .csv, in model order."),
        click.option("--range", "value_range", type=FINITE, nargs=2, default=None, callback=ordered_range,
                     metavar="LO HI", help="Input domain of a data file (replaces its lower/upper arrays or "
                                                 ".domain.json sidecar, with a warning)."),
        click.option("--split", type=click.Choice(["train", "test", "all"]), default=None,
                     help="Which samples of a file (default: test where the file has splits, else all)."),
    ]
    return lambda function: functools.reduce(lambda f, option: option(f), reversed(options), function)


def load(data: str, split: str, eps: float, label, features, value_range, chosen_split=None):
    """PruneData of ``split`` (``chosen_split`` overrides it for files); file-only options on a built-in
    data set are an error."""
    from certprune.datafile import is_data_file
    from certprune.prune import load_data

    if not is_data_file(data):
        if Path(data).suffix and data not in DATA_SETS:  # a file of another kind, not a data set's name
            raise CertpruneError(f"{data}: data files are .npz, .csv or .parquet (a .tsv or .txt table: save it "
                                 "as .csv with commas); built-in data sets: " + ", ".join(DATA_SETS))
        if label or features or value_range or chosen_split:
            raise CertpruneError(f"--label, --features, --range and --split apply to data files, not to {data!r}")
        return load_data(data, split, eps)
    names = tuple(f.strip() for f in features.split(",")) if features else None
    return load_data(data, chosen_split or split, eps, label=label, features=names, value_range=value_range)
