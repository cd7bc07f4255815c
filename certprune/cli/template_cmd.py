"""`certprune fairness-template DATA.csv --protected sex -o p.yaml`: a valid fairness property to edit."""
from __future__ import annotations

import math

import click

from certprune.cli.params import OUTPUT
from certprune.journal import write_atomic
from certprune.spec.fairness_template import fairness_template


@click.command("fairness-template")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--protected", required=True, help="Comma-separated protected attribute columns.")
@click.option("--label", default=None, help="The label column to leave out (default: label, y or target).")
@click.option("--max-values", type=int, default=100, show_default=True,
              help="Partition integer attributes into chunks of at most this many values.")
@click.option("--model", type=click.Path(dir_okay=False), default=None,
              help="The ONNX model the property is for: its inputs are checked against the features, and a "
                   "model with several outputs gets 'decision: argmax'.")
@click.option("-o", "--output", type=OUTPUT, required=True, help="The YAML to write.")
def command(data, protected, label, max_values, model, output) -> int:
    """Write a fairness property skeleton for the features of DATA (a .csv or .parquet table)."""
    names = tuple(p.strip() for p in protected.split(",") if p.strip())
    model_io = None
    if model:
        from certprune.onnx_io import load_onnx

        network = load_onnx(model)
        model_io = (math.prod(network.input_shape), math.prod(network.output_shape))
    write_atomic(output, fairness_template(data, names, label=label, max_values=max_values, model_io=model_io))
    click.echo(f"wrote {output}: check the attribute order against the model and widen the domains")
    return 0
