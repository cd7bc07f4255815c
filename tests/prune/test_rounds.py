"""Lottery-ticket rounds: rates per round, a random start, rewinding, round 0, per-round measurements; BatchNorm
unfolded for training and folded back."""
from __future__ import annotations

import pytest
import torch

from certprune.errors import CertpruneError
from certprune.onnx_io import load_onnx
from certprune.prune import (
    NRS, BatchNormScale, FinetuneSettings, Magnitude, NetworkModule, PruneData, Schedule, fold_unit_scales,
    initialise, prunable_layers, prune, prune_units, prune_weights, unfold_batchnorm,
)
from certprune.prune.module import unit_affines
from tests.conftest import MODELS
from tests.prune.nets import cnn, mlp


def _data(network, n=48, eps=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *network.input_shape), generator=g)
    with torch.no_grad():
        y = network(x.flip(0)).argmax(dim=1)
    return PruneData(x, y, eps, 0.0, 1.0)


def test_a_rate_per_round_reaches_the_target_in_as_many_rounds_as_it_takes():
    assert Schedule(rate=0.11).targets(1 - 0.89 ** 6) == pytest.approx([1 - 0.89 ** r for r in range(1, 7)])
    targets = Schedule(rate=0.11).targets(0.5)
    assert len(targets) == 6 and targets[-1] == 0.5 and targets[-2] == pytest.approx(1 - 0.89 ** 5)
    assert Schedule(rate=0.11).targets(0.21) == pytest.approx([0.11, 0.21])  # not a third round for 0.2%
    assert Schedule(rounds=2).targets(0.75) == pytest.approx([0.5, 0.75])
    with pytest.raises(CertpruneError, match="rate"):
        Schedule(rate=1.0)
    with pytest.raises(CertpruneError, match="initialisation"):
        Schedule(init="zeros")


def test_random_start_trains_the_dense_network_first_and_rewinds_survivors_to_it():
    network = mlp()
    data = _data(network)
    schedule = Schedule(rate=0.25, init="random", rewind=True, scope="global")
    run = prune_units(network, Magnitude(), 0.5, data, schedule, FinetuneSettings(epochs=1, seed=3))
    assert [r.index for r in run.history] == [0, 1, 2] and run.history[0].sparsity == 0.0  # 25%, then 50%
    assert run.history[0].units == [12, 10]
    start = initialise(network, data, seed=3)
    # Without training the last round is the start with the removed units cut out: rewound, not continued.
    untrained = prune_units(network, Magnitude(), 0.5, data, schedule, FinetuneSettings(epochs=0, seed=3))
    kept = [~m for m in untrained.removed]
    first = prunable_layers(network)[0].producer
    torch.testing.assert_close(untrained.network.layers[first].weight, start.layers[first].weight[kept[0]])
    assert not torch.equal(start.layers[first].weight, network.layers[first].weight)


def test_unstructured_rounds_remove_a_fifth_of_the_remaining_weights_each():
    network = cnn()
    run = prune_weights(network, 1 - 0.8 ** 3, _data(network), Schedule(rate=0.2, rewind=True, train_dense=True),
                        FinetuneSettings(epochs=1))
    total = run.history[0].weights
    assert [r.weights for r in run.history[1:]] == [total - round((1 - 0.8 ** k) * total) for k in (1, 2, 3)]


def test_prune_measures_every_round():
    network = mlp()
    data = _data(network)
    seen = []
    result = prune(network, NRS(samples=16), 0.5, data, schedule=Schedule(rounds=2, train_dense=True),
                   finetune=FinetuneSettings(epochs=1), eval_boxes=8, on_round=lambda r, s: seen.append((r.index, s)))
    assert [i for i, _ in seen] == [0, 1, 2] and len(result.rounds) == 3
    assert result.after == result.rounds[-1][1] and 0 <= result.after.certified <= 1
    assert result.rounds[0][1].units == network.relu_count > result.after.units


def test_batchnorm_unfolds_into_a_trained_scale_and_folds_back():
    path = MODELS / "mnist_cnn_bn.onnx"
    network = load_onnx(path)
    gammas = BatchNormScale.from_onnx(path).gammas
    unfolded = unfold_batchnorm(network, gammas)
    scales = unit_affines(unfolded)
    assert len(scales) == 3  # both conv BatchNorms and a scale of 1 for the dense layer
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(unfolded(x), network(x), atol=1e-4, rtol=1e-4)
        first = min(scales)
        torch.testing.assert_close(unfolded.layers[first].scale[:, 0, 0], gammas[0])
        assert set(NetworkModule(unfolded).scales) == {str(i) for i in scales}
        folded = fold_unit_scales(unfolded)
        assert [layer.kind for layer in folded.layers] == [layer.kind for layer in network.layers]
        torch.testing.assert_close(folded(x), network(x), atol=1e-4, rtol=1e-4)
    assert BatchNormScale().scores(unfolded, None)[0].tolist() == pytest.approx(gammas[0].abs().tolist())
