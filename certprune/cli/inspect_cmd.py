"""`certprune inspect`: the layers of a model and a parity check against onnxruntime."""
from __future__ import annotations

import json

import click
import numpy as np

from certprune.cli.params import FINITE, ordered_range
from certprune.errors import EXIT_USAGE
from certprune.onnx_io import load_onnx
from certprune.parity import PARITY_TOLERANCE, check_parity, input_range


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--samples", default=64, show_default=True, help="Random inputs for the parity check.")
@click.option("--seed", default=0, show_default=True)
@click.option("--range", "value_range", nargs=2, type=FINITE, default=None, callback=ordered_range,
              help="Input range LO HI for the parity inputs (default: the model's metadata, else 0 1).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect(model: str, samples: int, seed: int, value_range, as_json: bool) -> int:
    """Show MODEL's layers and check our forward pass against onnxruntime."""
    network = load_onnx(model)
    if value_range:
        bounds = tuple(np.full(network.input_shape, v) for v in value_range)
    else:
        bounds = input_range(network)
    parity = check_parity(network, model, samples=samples, seed=seed, bounds=bounds)
    shapes = network.shapes()
    rows = [{"index": i, "kind": layer.kind, "reads": ["input" if j < 0 else j for j in sources],
             "input": list(shapes[sources[0] + 1]), "output": list(shapes[i + 1]),
             "parameters": layer.parameters(),
             "relus": int(_size(shapes[i + 1])) if layer.kind == "relu" else 0}
            for i, (layer, sources) in enumerate(zip(network.layers, network.inputs))]
    summary = {
        "model": model, "input": {"name": network.input_name, "shape": list(network.input_shape)},
        "output": {"name": network.output_name, "shape": list(network.output_shape),
                   "transform": network.output_transform},
        "layers": rows, "parameters": network.parameter_count, "relus": network.relu_count,
        "parity": {"samples": parity.samples, "max_abs_diff": parity.max_abs_diff,
                   "output_scale": parity.output_scale, "relative": parity.relative, "ok": parity.ok},
    }
    click.echo(json.dumps(summary, indent=2) if as_json else _table(summary))
    if not parity.ok:
        click.echo(f"certprune: error: parity check failed: relative difference {parity.relative:.2e} "
                   f"exceeds {PARITY_TOLERANCE:.0e}", err=True)
        return EXIT_USAGE
    return 0


def _size(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def _table(s: dict) -> str:
    lines = [f"model   {s['model']}",
             f"input   {s['input']['name']}  (batch, {', '.join(map(str, s['input']['shape']))})",
             f"output  {s['output']['name']}  (batch, {', '.join(map(str, s['output']['shape']))})"
             + (f"  then {s['output']['transform']}" if s["output"]["transform"] else ""),
             "", f"{'#':>3}  {'kind':<9} {'reads':<9} {'input':<14} {'output':<14} {'params':>9} {'relus':>6}"]
    for r in s["layers"]:
        reads = ",".join("in" if j == "input" else str(j) for j in r["reads"])
        lines.append(f"{r['index']:>3}  {r['kind']:<9} {reads:<9} {str(tuple(r['input'])):<14} "
                     f"{str(tuple(r['output'])):<14} {r['parameters']:>9} {r['relus'] or '':>6}")
    p = s["parity"]
    lines += ["", f"parameters {s['parameters']}   relu neurons {s['relus']}",
              f"parity vs onnxruntime on {p['samples']} random inputs: max |diff| {p['max_abs_diff']:.2e} "
              f"(output scale {p['output_scale']:.3g}, relative {p['relative']:.2e}) "
              + ("OK" if p["ok"] else "FAILED")]
    return "\n".join(lines)
