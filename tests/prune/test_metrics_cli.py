"""Size and FLOP counts, certification by bounds, and the `certprune prune` command."""
from __future__ import annotations

import onnx
import pytest
import torch

from certprune.cli.main import main
from certprune.prune import PruneData, accuracy, certified, flops, margin_spec, parameter_count, predict
from tests.conftest import MODELS
from tests.prune.nets import cnn, mlp_affine


def test_flops_and_parameters_count_what_shrinkbench_counts():
    network = cnn()  # conv 1->4 k3 on 6x6 (out 4x4), conv 4->5 k3 pad 1 (out 4x4), dense 80->10, dense 10->3
    assert flops(network, nonzero=False) == 4 * 9 * 16 + 5 * 4 * 9 * 16 + 80 * 10 + 10 * 3
    assert parameter_count(network, nonzero=False) == network.parameter_count
    zeroed = network.with_layers([network.layers[0].__class__(torch.zeros_like(network.layers[0].weight),
                                                              network.layers[0].bias)] + list(network.layers[1:]))
    assert flops(zeroed) == flops(network, nonzero=False) - 4 * 9 * 16
    assert parameter_count(zeroed) == network.parameter_count - 36


def test_margin_spec_rows():
    C = margin_spec(torch.tensor([2, 0]), 3)
    assert C.tolist() == [[[-1, 0, 1], [0, -1, 1]], [[1, -1, 0], [1, 0, -1]]]
    assert margin_spec(torch.tensor([1, 0]), 1).flatten().tolist() == [1.0, -1.0]


@pytest.mark.parametrize("factory", [cnn, mlp_affine])
def test_certified_at_eps_zero_is_accuracy_and_shrinks_with_eps(factory):
    network = factory()
    x = torch.rand(32, *network.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = predict(network(x))
    y[:4] = 1 - y[:4].clamp(max=1)  # a few wrong labels
    point = PruneData(x, y, 0.0, 0.0, 1.0)
    assert int(certified(network, point).sum()) == round(accuracy(network, point) * 32)
    wide = certified(network, point.with_eps(0.05))
    assert bool((wide <= certified(network, point)).all())


def test_prune_command_writes_a_smaller_model(tmp_path, capsys):
    out = tmp_path / "pruned.onnx"
    code = main([
        "prune", str(MODELS / "mnist_mlp_100x2.onnx"), "--method", "magnitude", "--sparsity", "0.5",
        "--data", "mnist", "--eps", "0.02", "--boxes", "5", "-o", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "compression ratio" in text and "unstable/box" in text
    shapes = [tuple(t.dims) for t in onnx.load(str(out)).graph.initializer if t.name.endswith("_W")]
    assert shapes == [(50, 784), (50, 50), (10, 50)]


def test_prune_command_user_errors_exit_2(tmp_path, capsys):
    args = ["prune", str(MODELS / "mnist_mlp_100x2.onnx"), "--method", "magnitude", "--data", "mnist",
            "-o", str(tmp_path / "x.onnx")]
    assert main(args + ["--sparsity", "1.5"]) == 2
    assert "sparsity must be in [0, 1)" in capsys.readouterr().err
    assert main(args + ["--sparsity", "-0.1"]) == 2
    printed = capsys.readouterr()
    assert "--sparsity must be in [0, 1), got -0.1\n" in printed.err and "round" not in printed.err
    assert main(["prune", str(MODELS / "german_small.onnx"), "--method", "random", "--sparsity", "0.5",
                 "--data", "mnist", "-o", str(tmp_path / "y.onnx")]) == 2
    assert "takes inputs (20,)" in capsys.readouterr().err


def test_prune_command_nrs_with_certified_training_in_lottery_rounds(tmp_path, capsys):
    out = tmp_path / "nrs.onnx"
    code = main([
        "prune", str(MODELS / "mnist_mlp_100x2.onnx"), "--method", "nrs", "--train", "certified", "--lottery",
        "--sparsity", "0.2", "--epochs", "1", "--batch-size", "500", "--data", "mnist", "--eps", "0.02", "--boxes", "5",
        "-o", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert "training certified" in captured.out and "CROWN-certified" in captured.out
    rounds = [line.split()[0] for line in captured.err.splitlines()[1:] if "training:" not in line]
    assert rounds == ["0", "1", "2"]  # the dense round, then 11% and 20% of the units
    assert "round 0 training: 1/1 epochs" in captured.err  # training progress, the dense round's too
    shapes = [tuple(t.dims) for t in onnx.load(str(out)).graph.initializer if t.name.endswith("_W")]
    assert sum(s[0] for s in shapes[:-1]) == 160
    assert main(["certify", str(out), "--data", "mnist", "--eps", "0.02", "-n", "3", "--timeout", "5"]) in (0, 10, 20)
    assert "certified accuracy" in capsys.readouterr().out


def test_prune_command_refuses_training_options_that_do_not_fit(tmp_path, capsys):
    args = ["prune", str(MODELS / "mnist_mlp_100x2.onnx"), "--method", "nrs", "--sparsity", "0.5", "--data", "mnist",
            "-o", str(tmp_path / "x.onnx")]
    assert main(args + ["--train", "certified"]) == 2
    assert "needs --epochs > 0" in capsys.readouterr().err
    assert main(args + ["--train", "certified", "--epochs", "1", "--pgd-steps", "3"]) == 2
    assert "--pgd-steps is for adversarial training" in capsys.readouterr().err
