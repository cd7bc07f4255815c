"""`certprune bounds MODEL`: output bounds and unstable-neuron counts on one input box."""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import torch

from certprune.bounds import CROWN, IBP, AlphaCROWN
from certprune.cli.params import FINITE
from certprune.errors import CertpruneError
from certprune.onnx_io import load_onnx

METHODS = {"ibp": IBP, "crown": CROWN, "alpha": AlphaCROWN}


@click.command("bounds")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--center", type=click.Path(dir_okay=False), help="A .npy input; the box is center +- eps.")
@click.option("--box", "box_path", type=click.Path(dir_okay=False),
              help='A JSON file {"lower": [...], "upper": [...]} (flat or shaped like the input).')
@click.option("--eps", type=FINITE, default=None, help="L-inf radius around --center (0: the point itself).")
@click.option("--method", type=click.Choice(sorted(METHODS)), default="crown", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(model, center, box_path, eps, method, as_json) -> int:
    """Sound bounds of MODEL's logits on a box, and its stable / unstable ReLUs per layer."""
    network = load_onnx(model)
    lower, upper = _box(network, center, box_path, eps)
    bounds = METHODS[method]().compute(network, lower.unsqueeze(0), upper.unsqueeze(0))
    layers = [{"layer": i, "neurons": int(bounds.unstable(i)[0].numel()),
               "stably_active": int(bounds.stable_active(i)[0].sum()),
               "stably_inactive": int(bounds.stable_inactive(i)[0].sum()),
               "unstable": int(bounds.unstable(i)[0].sum())} for i in range(len(bounds.pre_lower))]
    result = {"model": model, "method": method, "output_lower": bounds.output_lower[0].tolist(),
              "output_upper": bounds.output_upper[0].tolist(), "relu_layers": layers}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return 0
    click.echo(f"{method} bounds of the logits of {model}")
    for j, (lo, hi) in enumerate(zip(result["output_lower"], result["output_upper"])):
        click.echo(f"  y{j:<3} [{lo: .6g}, {hi: .6g}]")
    click.echo(f"{'layer':>6} {'neurons':>8} {'active':>7} {'inactive':>9} {'unstable':>9}")
    for row in layers:
        click.echo(f"{row['layer']:>6} {row['neurons']:>8} {row['stably_active']:>7} "
                   f"{row['stably_inactive']:>9} {row['unstable']:>9}")
    return 0


def _box(network, center, box_path, eps) -> tuple[torch.Tensor, torch.Tensor]:
    if (center is None) == (box_path is None):
        raise CertpruneError("give exactly one of --center X.npy (with --eps) or --box BOX.json")
    size = int(np.prod(network.input_shape))
    if center is not None:
        if eps is None:
            raise CertpruneError("--center needs --eps E, the radius of the box around it (0 for the point itself)")
        try:
            x = np.load(center, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError) as error:
            reason = "not a .npy array" if "pickle" in str(error) else str(error)
            raise CertpruneError(f"cannot read --center {center}: {reason} (np.save writes one)") from None
        lower, upper = x - eps, x + eps
    elif eps is not None:
        raise CertpruneError("--eps applies to --center; a --box gives its corners itself")
    else:
        try:
            data = json.loads(Path(box_path).read_text(encoding="utf-8-sig"))
            lower, upper = np.asarray(data["lower"], np.float64), np.asarray(data["upper"], np.float64)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CertpruneError(f"cannot read --box {box_path}: expected {{\"lower\": [...], \"upper\": [...]}} "
                                 f"({type(error).__name__}: {error})") from None
    for name, value in (("lower", lower), ("upper", upper)):
        if value.size != size:
            raise CertpruneError(f"box {name} has {value.size} values, the model input {network.input_shape} has {size}")
        bad = np.flatnonzero(~np.isfinite(value.ravel()))
        if bad.size:
            raise CertpruneError(f"box {name} is not finite at input {bad[0]} ({value.ravel()[bad[0]]})")
    if eps is not None and eps < 0:
        raise CertpruneError(f"--eps must be >= 0, got {eps:g}")
    above = np.flatnonzero(lower.ravel() > upper.ravel())
    if above.size:
        i = above[0]
        raise CertpruneError(f"box lower bound exceeds upper bound at input {i} ({lower.ravel()[i]:g} > "
                             f"{upper.ravel()[i]:g})")
    shape = network.input_shape
    return (torch.tensor(lower.reshape(shape), dtype=torch.float32),
            torch.tensor(upper.reshape(shape), dtype=torch.float32))
