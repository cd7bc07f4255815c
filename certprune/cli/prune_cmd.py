"""`certprune prune MODEL --method M --sparsity S --data D [--train REGIME] -o OUT`: prune, train, write ONNX, report."""
from __future__ import annotations

import json
import shlex
from dataclasses import replace

import click
import numpy as np
from click.core import ParameterSource

from certprune.errors import CertpruneError
from certprune.journal import content_sha256, file_sha256, journal_header
from certprune.onnx_io import load_onnx, save_onnx
from certprune.parity import check_parity
from certprune.progress import progress_bar
from certprune.prune import (
    CRITERIA, NRS, REGIMES, UNSTRUCTURED, BatchNormScale, Schedule, Stability, fold_unit_scales, prune,
    unfold_batchnorm,
)
from certprune.prune import protocol
from certprune.prune.checkpoint import Checkpoint
from certprune.cli.data_options import data_options, load
from certprune.cli.params import FINITE, OUTPUT


@click.command("prune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(sorted(CRITERIA) + [UNSTRUCTURED]), required=True,
              help="Importance criterion (units removed by surgery) or unstructured weight magnitude masks.")
@click.option("--sparsity", type=FINITE, required=True, help="Share of hidden units (or weights) to remove, in [0, 1).")
@data_options()
@click.option("--eps", type=FINITE, default=0.0, show_default=True,
              help="L-inf radius: pixels for mnist, a fraction of each feature's domain for the built-in tables, "
                   "input units for your own file.")
@click.option("--train", "regime", type=click.Choice(sorted(REGIMES)), default=None,
              help="Training regime of every round [default: natural; adversarial with --pgd-steps].")
@click.option("--bound", type=click.Choice(["crown-ibp", "ibp"]), default="crown-ibp", show_default=True,
              help="Bounds of certified training.")
@click.option("--pgd-steps", type=int, default=0, show_default=True,
              help="Adversarial training with PGD of this many steps (0: FGSM).")
@click.option("--finetune-epochs", "--epochs", "epochs", type=int, default=0, show_default=True,
              help="Training epochs per round (and of round 0).")
@click.option("--warmup", type=FINITE, default=None, help="Epochs at eps 0 [default: 5% of --epochs].")
@click.option("--ramp", type=FINITE, default=None, help="Epochs of the eps ramp [default: 40% of --epochs].")
@click.option("--reg-weight", "nrs_weight", type=FINITE, default=None,
              help="Weight of the NRS regulariser [default with --method nrs: 1e-3 certified, 1e-2 otherwise; 0].")
@click.option("--slim-weight", type=FINITE, default=None, help="L1 weight on BatchNorm scales [default: 1e-4 for slimming].")
@click.option("--rs-lambda", type=FINITE, default=0.0, show_default=True, help="Weight of the RS stability loss.")
@click.option("--rs-bounds", type=click.Choice(["ibp", "crown"]), default="ibp", show_default=True,
              help="Bounds of the RS loss (crown: dense networks).")
@click.option("--lr", type=FINITE, default=1e-3, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--rounds", type=int, default=1, show_default=True, help="Pruning rounds (without --rate).")
@click.option("--rate", type=FINITE, default=None, help="Share of what is left removed per round (the lottery "
              "protocol: 0.11 of units, 0.2 of weights); rounds follow from the sparsity.")
@click.option("--lottery", is_flag=True, help="The reference protocol: random init trained first, --rate 0.11 "
              "(0.2 unstructured), rewinding, global ranking for nrs/slimming/random.")
@click.option("--init", type=click.Choice(["model", "random"]), default=None,
              help="Start from the model's weights or a seeded random initialisation [default: model].")
@click.option("--train-dense", is_flag=True, help="Train the unpruned network first (round 0).")
@click.option("--rewind", is_flag=True, help="Rewind survivors to their starting weights before each round's training.")
@click.option("--scope", type=click.Choice(["layer", "global"]), default=None, help="Rank units per layer or "
              "across layers [default: layer; with --lottery global for nrs, slimming, random].")
@click.option("--fold-mean", is_flag=True, help="Fold removed units' mean activation into the next bias.")
@click.option("--boxes", type=int, default=100, show_default=True, help="Test boxes for the unstable and CROWN counts.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads (more rarely helps small nets).")
@click.option("--journal", type=OUTPUT, default=None,
              help="Checkpoint file, rewritten after every round (binary: the networks so far).")
@click.option("--resume", is_flag=True, help="Continue after the last round the --journal checkpoint holds.")
@click.option("-o", "--output", type=OUTPUT, required=True, help="The pruned ONNX file.")
def command(model, method, sparsity, data, label, features, value_range, split, eps, regime, bound, pgd_steps,
            epochs, warmup, ramp, nrs_weight, slim_weight, rs_lambda, rs_bounds, lr, batch_size, rounds, rate,
            lottery, init, train_dense, rewind, scope, fold_mean, boxes, seed, threads, journal, resume, output) -> int:
    """Prune MODEL and write the smaller network to OUTPUT, with its size, accuracy and stability per round."""
    if resume and not journal:
        raise CertpruneError("--resume needs --journal FILE, the checkpoint to continue")
    if not 0 <= sparsity < 1:  # here, before the table's header, and as the user wrote it
        raise CertpruneError(f"--sparsity must be in [0, 1), got {sparsity:g}")
    if eps < 0:
        raise CertpruneError(f"--eps must be >= 0, got {eps:g}")
    if boxes < 1:
        raise CertpruneError(f"--boxes must be >= 1, got {boxes}")
    if lottery and click.get_current_context().get_parameter_source("rounds") is ParameterSource.COMMANDLINE:
        raise CertpruneError("--rounds does not apply with --lottery: its rounds follow from --sparsity and --rate")
    import torch

    torch.set_num_threads(max(threads, 1))
    regime = regime or ("adversarial" if pgd_steps else "natural")
    if regime != "natural" and epochs == 0:
        raise CertpruneError(f"--train {regime} needs --epochs > 0")
    if pgd_steps and regime != "adversarial":
        raise CertpruneError(f"--pgd-steps is for adversarial training, not --train {regime}")
    gammas = BatchNormScale.from_onnx(model).gammas
    network = load_onnx(model)
    if gammas or method == "slimming":  # gamma becomes a trained per-unit scale (1 where there is no BatchNorm)
        network = unfold_batchnorm(network, gammas)
    train = load(data, "train", eps, label, features, value_range, split).shaped(network.input_shape)
    test = load(data, "test", eps, label, features, value_range, split).shaped(network.input_shape)
    if tuple(train.x.shape[1:]) != network.input_shape:
        raise CertpruneError(f"{model} takes inputs {network.input_shape}; {data} samples are {tuple(train.x.shape[1:])}")
    settings = protocol.training(regime, epochs, method, nrs_weight=nrs_weight, slim_weight=slim_weight, warmup=warmup,
                        ramp=ramp, bound=bound, attack="pgd" if pgd_steps else "fgsm", steps=max(pgd_steps, 1),
                        lr=lr, batch_size=batch_size, seed=seed, rs_lambda=rs_lambda, rs_bounds=rs_bounds)
    given = {"init": init, "scope": scope, "rate": rate, "rewind": rewind or None}
    given = {"train_dense": train_dense, "fold_mean": fold_mean, **{k: v for k, v in given.items() if v is not None}}
    schedule = protocol.lottery(method, **given) if lottery else Schedule(rounds=rounds, **given)
    checkpoint = None
    if journal:
        arguments = click.get_current_context().params
        settings_used = {k: v for k, v in arguments.items() if k not in _NOT_IN_CHECKPOINT}
        header = journal_header("prune", {"model": file_sha256(model, "model"), "data": _data_sha256(train)},
                                settings_used)
        checkpoint = Checkpoint(journal, header, resume)
        if checkpoint.restored is not None:
            click.echo(f"resuming after round {checkpoint.restored.done} ({journal})", err=True)
    click.echo(f"{'round':>5} {'sparsity':>8} {'params':>8} {'FLOPs':>8} {'relus':>6} {'accuracy':>8} "
               f"{'unstable':>8} {'CROWN':>6}", err=True)
    result = prune(network, _criterion(method), sparsity, train, schedule=schedule, finetune=settings,
                   eval_data=test, eval_boxes=boxes, on_round=lambda r, s: click.echo(_round(r, s), err=True),
                   checkpoint=checkpoint, on_epoch=_EpochProgress())
    pruned = _with_input_range(fold_unit_scales(result.network), train)
    save_onnx(pruned, output)
    parity = check_parity(pruned, output)  # on the recorded input range
    if not parity.ok:
        raise CertpruneError(f"{output} disagrees with the pruned network in onnxruntime "
                             f"(relative difference {parity.relative:.1e})")
    next_step = None if network.output_transform == "sigmoid" else \
        f"certprune certify {shlex.quote(output)} --eps {eps:g}{_data_arguments(data, label, features, value_range)}"
    click.echo(_table(result, eps, output, regime, next_step))
    return 0


# options that do not change the rounds' networks: a checkpoint resumes across them
_NOT_IN_CHECKPOINT = ("model", "data", "boxes", "threads", "journal", "resume", "output")


def _data_sha256(data) -> str:
    """The training data's content: samples, labels, radii and the domain the boxes are clipped to."""
    def array(value):
        return None if value is None else np.asarray(value.numpy() if hasattr(value, "numpy") else value)

    return content_sha256([array(data.x), array(data.y), array(data.eps), array(data.lower), array(data.upper)])


class _EpochProgress:
    """A bar per round's training on a terminal (epochs, mean loss, an estimate of the rest); off a terminal a
    line at most every 30 s and one at the end of each round's training (``certprune.progress``)."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, index: int, epoch: int, epochs: int, loss: float) -> None:
        if epoch == 0:  # training starts
            self.bar = progress_bar(epochs, "epoch", desc=f"round {index} training", leave=False)
            return
        self.bar.set_postfix_str(f"loss {loss:.4f}")
        self.bar.update(1)
        if epoch == epochs:
            self.bar.close()


def _with_input_range(network, data):
    """The network with the data's input domain recorded as its ``certprune.input_lower/upper`` metadata (what
    ``inspect`` checks parity on), unless the model already records one or the data has none."""
    import torch

    if data.lower is None or data.upper is None or "certprune.input_lower" in network.metadata:
        return network
    shape = (1, *network.input_shape)
    lower, upper = (torch.as_tensor(v, dtype=torch.float64).expand(shape).reshape(-1) for v in (data.lower, data.upper))
    values = {}
    for key, bound in (("certprune.input_lower", lower), ("certprune.input_upper", upper)):
        same = bool((bound == bound[0]).all())
        values[key] = json.dumps(float(bound[0]) if same else bound.tolist())
    return replace(network, metadata={**network.metadata, **values})


def _criterion(name: str):
    """Slimming and stability read BatchNorm scales from the unfolded per-unit Affines; NRS too."""
    if name == "slimming":
        return BatchNormScale()
    return {"stability": Stability(), "nrs": NRS()}.get(name, name)


def _round(r, s) -> str:
    return (f"{r.index:>5} {r.sparsity:>8.3f} {s.parameters:>8} {s.flops:>8} {s.units:>6} {s.accuracy:>8.2%} "
            f"{s.unstable:>8.1f} {s.certified:>6.0%}")


def _data_arguments(data, label, features, value_range) -> str:
    """The options that name the data, so that the hint's certify command runs on the same samples."""
    parts = [] if data == "mnist" else ["--data", data]
    parts += ["--label", label] if label else []
    parts += ["--features", features] if features else []
    parts += ["--range", f"{value_range[0]:g}", f"{value_range[1]:g}"] if value_range else []
    return "".join(" " + shlex.quote(str(p)) for p in parts)


def _table(result, eps: float, output: str, regime: str, next_step: str | None) -> str:
    """The before/after table; ``next_step``: the command that verifies the pruned model completely (none for
    a model ending in a sigmoid, which certify refuses)."""
    b, a = result.before, result.after
    rows = [("parameters", b.parameters, a.parameters), ("FLOPs (MACs)", b.flops, a.flops),
            ("ReLU units", b.units, a.units), ("test accuracy", f"{b.accuracy:.2%}", f"{a.accuracy:.2%}"),
            (f"unstable/box @ {eps:g}", f"{b.unstable:.1f}", f"{a.unstable:.1f}"),
            (f"CROWN-certified @ {eps:g}", f"{b.certified:.0%}", f"{a.certified:.0%}")]
    lines = [f"method {result.method}  sparsity {result.sparsity:g}  training {regime}  -> {output}", "",
             f"{'':<24}{'before':>12}{'after':>12}"]
    lines += [f"{name:<24}{before!s:>12}{after!s:>12}" for name, before, after in rows]
    where = f"unstable ReLUs and CROWN-certified share on {a.boxes} test boxes"
    lines += ["", f"compression ratio {result.compression_ratio:.2f}x   theoretical speed-up {result.speedup:.2f}x",
              f"({where}; complete verification: {next_step})" if next_step else f"({where})"]
    return "\n".join(lines)
