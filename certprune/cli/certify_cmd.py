"""`certprune certify MODEL --data mnist --eps E`: certified accuracy over the first N test samples."""
from __future__ import annotations

import click
import numpy as np

from certprune.bab.search import SearchSettings
from certprune.cli.robustness_run import run_samples
from certprune.cli.verify_cmd import write_json
from certprune.errors import CertpruneError
from certprune.onnx_io import load_onnx
from certprune.parity import input_range
from certprune.spec.robustness import RobustnessInstance


@click.command("certify")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Choice(["mnist"]), default="mnist", show_default=True)
@click.option("--eps", type=float, required=True, help="L-inf radius.")
@click.option("-n", "count", type=int, default=100, show_default=True, help="First N test samples.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per sample.")
@click.option("--journal", type=click.Path(dir_okay=False), default=None, help="JSONL journal for resuming.")
@click.option("--resume", is_flag=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(model, data, eps, count, timeout, journal, resume, json_out, quiet) -> int:
    """Certified accuracy of MODEL: per sample verified / falsified / unknown / misclassified."""
    if eps < 0 or timeout <= 0 or count <= 0:
        raise CertpruneError("--eps must be >= 0, --timeout > 0 and -n > 0")
    from certprune.data import load_mnist

    network = load_onnx(model)
    if int(np.prod(network.input_shape)) != 784 or int(np.prod(network.output_shape)) != 10:
        raise CertpruneError(f"{model}: input {network.input_shape} and {int(np.prod(network.output_shape))} "
                             "outputs; --data mnist needs 784 inputs (28x28 pixels in [0, 1]) and 10 logits")
    x, y = load_mnist("test")
    x, y = x[:count].numpy().astype(np.float64), y[:count].numpy()
    lo, hi = input_range(network)
    samples = [RobustnessInstance(i, x[i].reshape(network.input_shape), int(y[i]),
                                  np.clip(x[i].reshape(network.input_shape) - eps, lo, hi),
                                  np.clip(x[i].reshape(network.input_shape) + eps, lo, hi), timeout)
               for i in range(len(x))]
    header = {"model": model, "data": data, "eps": eps, "timeout": timeout}
    report = run_samples(network, model, samples, SearchSettings(timeout=timeout), journal, resume,
                         not quiet, header)
    totals = report.totals()
    click.echo(f"certified accuracy {totals['verified'] / totals['samples']:.1%} at eps {eps:g}")
    write_json(json_out, {**header, "totals": totals, "samples": report.records})
    return 0
