"""`certprune prune MODEL --method M --sparsity S --data D -o OUT`: prune, fine-tune, write ONNX, report."""
from __future__ import annotations

import click

from certprune.errors import CertpruneError
from certprune.onnx_io import load_onnx, save_onnx
from certprune.parity import check_parity
from certprune.prune import (
    CRITERIA, UNSTRUCTURED, BatchNormScale, FinetuneSettings, Magnitude, Schedule, Stability, prune,
)
from certprune.cli.data_options import data_options, load


@click.command("prune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(sorted(CRITERIA) + [UNSTRUCTURED]), required=True,
              help="Importance criterion (units removed by surgery) or unstructured weight magnitude masks.")
@click.option("--sparsity", type=float, required=True, help="Share of hidden units (or weights) to remove, in [0, 1).")
@data_options()
@click.option("--eps", type=float, default=0.0, show_default=True,
              help="L-inf radius: pixels for mnist, a fraction of each feature's domain for the built-in tables, "
                   "input units for your own file.")
@click.option("--rounds", type=int, default=1, show_default=True, help="Iterative pruning rounds.")
@click.option("--finetune-epochs", type=int, default=0, show_default=True, help="Epochs of fine-tuning per round.")
@click.option("--rs-lambda", type=float, default=0.0, show_default=True, help="Weight of the ReLU-stability loss.")
@click.option("--rs-bounds", type=click.Choice(["ibp", "crown"]), default="ibp", show_default=True,
              help="Bounds of the stability loss (crown: dense networks).")
@click.option("--pgd-steps", type=int, default=0, show_default=True, help="PGD steps for adversarial fine-tuning.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--rewind", is_flag=True, help="Rewind survivors to the input weights before each fine-tuning.")
@click.option("--scope", type=click.Choice(["layer", "global"]), default="layer", show_default=True)
@click.option("--fold-mean", is_flag=True, help="Fold removed units' mean activation into the next bias.")
@click.option("--boxes", type=int, default=100, show_default=True, help="Test boxes for the unstable-neuron count.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="The pruned ONNX file.")
def command(model, method, sparsity, data, label, features, value_range, split, eps, rounds, finetune_epochs, rs_lambda, rs_bounds, pgd_steps, lr, rewind,
            scope, fold_mean, boxes, seed, output) -> int:
    """Prune MODEL and write the smaller network to OUTPUT, with its size, accuracy and stability."""
    if eps < 0 or boxes < 1:
        raise CertpruneError(f"--eps must be >= 0 and --boxes >= 1, got {eps} and {boxes}")
    network = load_onnx(model)
    train = load(data, "train", eps, label, features, value_range, split)
    test = load(data, "test", eps, label, features, value_range, split)
    if tuple(train.x.shape[1:]) != network.input_shape:
        raise CertpruneError(f"{model} takes inputs {network.input_shape}; {data} samples are {tuple(train.x.shape[1:])}")
    result = prune(network, _method(method, model), sparsity, train,
                   schedule=Schedule(rounds=rounds, rewind=rewind, scope=scope, fold_mean=fold_mean),
                   finetune=FinetuneSettings(epochs=finetune_epochs, lr=lr, rs_lambda=rs_lambda, rs_bounds=rs_bounds,
                                             pgd_steps=pgd_steps, seed=seed),
                   eval_data=test, eval_boxes=boxes,
                   on_round=lambda r: click.echo(f"round {r['round']}: sparsity {r['sparsity']:.3f}", err=True))
    save_onnx(result.network, output)
    parity = check_parity(result.network, output)
    if not parity.ok:
        raise CertpruneError(f"{output} disagrees with the pruned network in onnxruntime "
                             f"(relative difference {parity.relative:.1e})")
    click.echo(_table(result, eps, output))
    return 0


def _method(name: str, model: str):
    """Slimming needs the BatchNorm scales that loading folded away; stability is normalised by them."""
    if name == "slimming":
        click.echo("slimming: layers without a BatchNorm scale are scored by magnitude", err=True)
        return BatchNormScale.from_onnx(model, fallback=Magnitude())
    if name == "stability":
        return Stability(gammas=BatchNormScale.from_onnx(model).gammas)
    return name


def _table(result, eps: float, output: str) -> str:
    b, a = result.before, result.after
    rows = [("parameters", b.parameters, a.parameters), ("FLOPs (MACs)", b.flops, a.flops),
            ("ReLU units", b.units, a.units), ("test accuracy", f"{b.accuracy:.2%}", f"{a.accuracy:.2%}"),
            (f"unstable/box @ {eps:g}", f"{b.unstable:.1f}", f"{a.unstable:.1f}")]
    lines = [f"method {result.method}  sparsity {result.sparsity:g}  -> {output}", "",
             f"{'':<22}{'before':>12}{'after':>12}"]
    lines += [f"{name:<22}{before!s:>12}{after!s:>12}" for name, before, after in rows]
    lines += ["", f"compression ratio {result.compression_ratio:.2f}x   theoretical speed-up {result.speedup:.2f}x",
              f"(unstable ReLUs counted by CROWN on {a.boxes} test boxes)"]
    return "\n".join(lines)
