"""A pruning run's checkpoint: an interrupted run resumed ends where an uninterrupted one does; a checkpoint of
another run, or one a mistyped path would overwrite, is refused in one line."""
from __future__ import annotations

import pytest
import torch

from certprune.cli.main import main
from certprune.errors import CertpruneError
from certprune.journal import journal_header
from certprune.prune import FinetuneSettings, Magnitude, PruneData, Schedule, prune_units, prune_weights
from certprune.prune.checkpoint import Checkpoint
from tests.conftest import MODELS
from tests.prune.nets import mlp


class _Stop(Exception):
    """Stands for Ctrl-C after a round."""


def _data(network, n=48, eps=0.05):
    x = torch.rand((n, *network.input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = network(x.flip(0)).argmax(dim=1)
    return PruneData(x, y, eps, 0.0, 1.0)


def _stop_after(index):
    def on_round(round_):
        if round_.index == index:
            raise _Stop
    return on_round


def _same(a, b):
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers):
        for name in ("weight", "bias"):
            if hasattr(x, name):
                assert torch.equal(getattr(x, name), getattr(y, name))


@pytest.mark.parametrize("unstructured", [False, True])
def test_an_interrupted_run_resumed_from_its_checkpoint_ends_as_an_uninterrupted_one(tmp_path, unstructured):
    torch.set_num_threads(1)
    network = mlp()
    data = _data(network)
    schedule, settings = Schedule(rounds=3, train_dense=True), FinetuneSettings(epochs=2, seed=5)

    def run(checkpoint=None, on_round=None, on_epoch=None):
        if unstructured:
            return prune_weights(network, 0.6, data, schedule, settings, on_round, checkpoint, on_epoch)
        return prune_units(network, Magnitude(), 0.6, data, schedule, settings, on_round, checkpoint, on_epoch)

    whole = run()
    header = journal_header("prune", {"model": "m"}, {"sparsity": 0.6})
    path = tmp_path / "ck.pt"
    with pytest.raises(_Stop):
        run(Checkpoint(path, header, resume=False), _stop_after(2))
    checkpoint = Checkpoint(path, header, resume=True)
    assert checkpoint.restored.done == 2  # the round the stop interrupted had finished and was kept
    seen, epochs = [], []
    resumed = run(checkpoint, lambda r: seen.append(r.index), lambda *e: epochs.append(e[:3]))
    assert seen == [0, 1, 2, 3]  # the finished rounds announced again, then the last one
    assert {e[0] for e in epochs} == {3} and [e[1] for e in epochs] == [0, 1, 2]  # only round 3 trains
    _same(resumed.network, whole.network)
    assert [r.index for r in resumed.history] == [r.index for r in whole.history]
    if unstructured:
        assert all(torch.equal(resumed.weight_masks[i], m) for i, m in whole.weight_masks.items())
    else:
        assert all(torch.equal(a, b) for a, b in zip(resumed.removed, whole.removed))


def test_a_checkpoint_of_another_run_or_over_finished_rounds_is_refused(tmp_path):
    network = mlp()
    path = tmp_path / "ck.pt"
    header = journal_header("prune", {"model": "m"}, {"lr": 0.001})
    prune_units(network, Magnitude(), 0.5, _data(network), Schedule(), FinetuneSettings(),
                checkpoint=Checkpoint(path, header, resume=False))
    with pytest.raises(CertpruneError, match="already holds round 1 .* pass --resume"):
        Checkpoint(path, header, resume=False)
    with pytest.raises(CertpruneError, match="setting lr was 0.001, now 0.01"):
        Checkpoint(path, journal_header("prune", {"model": "m"}, {"lr": 0.01}), resume=True)
    ranged = journal_header("prune", {"model": "m"}, {"lr": 0.001, "value_range": (0.0, 1.0)})  # a tuple: click's
    prune_units(network, Magnitude(), 0.5, _data(network), Schedule(), FinetuneSettings(),
                checkpoint=Checkpoint(tmp_path / "r.pt", ranged, resume=False))
    assert Checkpoint(tmp_path / "r.pt", ranged, resume=True).restored.done == 1  # reads back as a list: the same
    path.write_text("not a checkpoint")
    with pytest.raises(CertpruneError, match="is not a certprune pruning checkpoint"):
        Checkpoint(path, header, resume=True)


def test_prune_command_resumes_its_journal_and_names_misuse(tmp_path, capsys):
    args = ["prune", str(MODELS / "mnist_mlp_100x2.onnx"), "--method", "magnitude", "--sparsity", "0.5",
            "--rounds", "2", "--epochs", "1", "--batch-size", "500", "--data", "mnist", "--boxes", "3",
            "--journal", str(tmp_path / "ck.pt")]
    assert main(args + ["-o", str(tmp_path / "a.onnx")]) == 0
    err = capsys.readouterr().err
    assert "round 1 training: 1/1 epochs (100%)" in err and "; loss " in err  # training progress, per round
    assert main(args + ["-o", str(tmp_path / "b.onnx")]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(args + ["--resume", "-o", str(tmp_path / "b.onnx")]) == 0
    err = capsys.readouterr().err
    assert "resuming after round 2" in err and "training" not in err  # nothing trained again
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert main(args + ["--resume", "--lr", "0.01", "-o", str(tmp_path / "c.onnx")]) == 2
    assert "setting lr was 0.001, now 0.01" in capsys.readouterr().err
    assert main(args[:-2] + ["--resume", "-o", str(tmp_path / "c.onnx")]) == 2
    assert "--resume needs --journal" in capsys.readouterr().err
    no_data = [a for a in args[:-2] if a not in ("--data", "mnist")]
    assert main(no_data + ["-o", str(tmp_path / "c.onnx")]) == 2
    assert "Missing option '--data'" in capsys.readouterr().err


def test_the_checkpoint_keys_the_data_domain_and_radius_too():
    """Certified or adversarial training clips its boxes to the domain: another domain is another run."""
    from certprune.cli.prune_cmd import _data_sha256

    x, y = torch.rand(4, 3), torch.tensor([0, 1, 0, 1])
    digests = {_data_sha256(PruneData(x, y, eps, lo, hi))
               for eps, lo, hi in ((0.1, 0.0, 1.0), (0.1, -1.0, 1.0), (0.2, 0.0, 1.0), (0.1, None, None))}
    assert len(digests) == 4
