"""Fine-tuning, its stability regulariser and PGD, iterative schedules, unstructured masks, BatchNorm scales."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from certprune.bounds import IBP
from certprune.errors import CertpruneError, UnsupportedLayerError
from certprune.onnx_io import load_onnx
from certprune.prune import (
    Adversarial, BatchNormScale, FinetuneSettings, Magnitude, NetworkModule, PruneData, Schedule, Stability,
    global_magnitude_masks, pgd_attack, prunable_layers, prune, prune_units, prune_weights, select_units,
    stability_loss, unstable_neurons,
)
from certprune.torch_io import from_torch
from tests.conftest import MODELS
from tests.prune.nets import NETWORKS, cnn, mlp


def _data(network, n=64, eps=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *network.input_shape), generator=g)
    with torch.no_grad():  # learnable labels: the network's own decisions on a shifted input
        y = network(x.flip(0)).argmax(dim=1)
    return PruneData(x, y, eps, 0.0, 1.0)


@pytest.mark.parametrize("net_name", sorted(NETWORKS))
def test_training_interval_bounds_match_the_sound_ibp(net_name):
    network = NETWORKS[net_name]()
    lower, upper = _data(network).boxes()
    ours = NetworkModule(network).interval_bounds(lower, upper)
    sound = IBP().compute(network, lower, upper)
    for i, (lo, hi) in enumerate(ours):
        lo, hi = (t.detach().reshape(sound.pre_lower[i].shape) for t in (lo, hi))
        # The sound bounds are ours widened by rounding margins (2^-15 of the sums of |terms|, accumulated).
        scale = float(sound.pre_upper[i].abs().max())
        torch.testing.assert_close(lo, sound.pre_lower[i], atol=1e-2 * scale, rtol=0)
        torch.testing.assert_close(hi, sound.pre_upper[i], atol=1e-2 * scale, rtol=0)
        assert bool((sound.pre_lower[i] <= lo).all()) and bool((sound.pre_upper[i] >= hi).all())


def test_module_round_trip_is_exact():
    network = cnn()
    x = torch.rand(8, *network.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(NetworkModule(network).to_network()(x), network(x), atol=0, rtol=0)


def test_stability_regulariser_reduces_unstable_neurons():
    network = mlp()
    data = _data(network, eps=0.1)
    lower, upper = data.boxes()
    losses, unstable = [], []
    for rs_lambda in (0.0, 5.0):
        tuned = prune_units(network, Magnitude(), 0.0, data, settings=FinetuneSettings(
            epochs=30, lr=1e-2, batch_size=32, rs_lambda=rs_lambda)).network
        with torch.no_grad():
            losses.append(float(stability_loss(NetworkModule(tuned), lower, upper)))
        unstable.append(unstable_neurons(tuned, data))
    assert losses[1] < losses[0] and unstable[1] < unstable[0]


def test_pgd_stays_in_the_box_and_does_not_lower_the_loss():
    network = mlp()
    data = _data(network, eps=0.1)
    lower, upper = data.boxes()
    module = NetworkModule(network)
    x_adv = pgd_attack(module, data.x, data.y, lower, upper, 10, 0.25, torch.Generator().manual_seed(0))
    assert bool(((x_adv >= lower) & (x_adv <= upper)).all())
    loss = nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(module(x_adv), data.y)) >= float(loss(module(data.x), data.y))
    tuned = prune_units(network, Magnitude(), 0.5, data, settings=FinetuneSettings(
        epochs=1, regime=Adversarial(attack="pgd", steps=3))).network
    assert tuned.relu_count == network.relu_count // 2


def test_iterative_rounds_with_rewinding_reach_the_target():
    network = mlp()
    data = _data(network)
    run = prune_units(network, Stability(samples=16), 0.6, data, Schedule(rounds=3, rewind=True),
                      FinetuneSettings(epochs=1))
    sizes = [info.size for info in prunable_layers(network)]
    assert [int(m.sum()) for m in run.removed] == [round(0.6 * n) for n in sizes]
    assert [r.units for r in run.history][-1] == [n - round(0.6 * n) for n in sizes]
    assert len(run.history) == 3 and run.history[0].sparsity < run.history[1].sparsity < 0.6 + 1e-9


def test_global_scope_takes_the_share_over_all_layers():
    network = mlp()
    infos = prunable_layers(network)
    scores = [torch.arange(info.size, dtype=torch.float32) + 100 * k for k, info in enumerate(infos)]
    masks = select_units(network, scores, 0.5, scope="global")
    total = sum(info.size for info in infos)
    assert sum(int(m.sum()) for m in masks) == round(0.5 * total)
    assert int(masks[0].sum()) == infos[0].size - 1  # the low-scoring layer goes first


def test_unstructured_masks_stay_zero_through_fine_tuning():
    network = cnn()
    data = _data(network)
    masks = global_magnitude_masks(network, 0.7)
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.7 * total)
    run = prune_weights(network, 0.7, data, Schedule(rounds=2), FinetuneSettings(epochs=2, lr=1e-2))
    for index, mask in run.weight_masks.items():
        assert bool((run.network.layers[index].weight[~mask] == 0).all())
    result = prune(network, "unstructured", 0.7, data, finetune=FinetuneSettings(epochs=1), eval_boxes=8)
    assert result.compression_ratio > 2 and result.speedup > 2
    assert result.after.units == result.before.units


def test_prune_reports_sizes_flops_and_stability():
    network = cnn()
    data = _data(network)
    result = prune(network, "magnitude", 0.5, data, eval_boxes=8)
    assert result.after.parameters < result.before.parameters and result.after.flops < result.before.flops
    assert result.compression_ratio == result.before.parameters / result.after.parameters
    assert 0 <= result.after.accuracy <= 1 and result.after.boxes == 8
    with pytest.raises(CertpruneError, match="sparsity"):
        prune(network, "magnitude", 1.0, data)
    with pytest.raises(CertpruneError, match="unknown pruning criterion"):
        prune(network, "biggest", 0.5, data)


def test_batchnorm_scales_from_torch_and_onnx():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.1, -2.0, 0.5, 3.0, -0.2, 1.0]))
    network = from_torch(model.eval(), (4,))
    criterion = BatchNormScale.from_torch(model)
    with pytest.raises(CertpruneError, match="no BatchNorm scale for layer 2"):
        criterion.scores(network, None)
    scores = BatchNormScale.from_torch(model, fallback=Magnitude()).scores(network, None)
    torch.testing.assert_close(scores[0], torch.tensor([0.1, 2.0, 0.5, 3.0, 0.2, 1.0]))
    torch.testing.assert_close(scores[1], Magnitude().scores(network)[1])

    cnn_gammas = BatchNormScale.from_onnx(MODELS / "mnist_cnn_bn.onnx").gammas
    assert sorted(cnn_gammas) == [0, 1] and [len(g) for g in cnn_gammas.values()] == [8, 16]
    shipped = load_onnx(MODELS / "mnist_cnn_bn.onnx")
    sizes = [info.size for info in prunable_layers(shipped)]
    assert sizes[:2] == [8, 16]


@pytest.mark.parametrize("net_name", ["mlp", "mlp_affine"])
def test_training_crown_bounds_hold_and_are_tighter_than_ibp(net_name):
    network = NETWORKS[net_name]()
    data = _data(network, eps=0.1)
    lower, upper = data.boxes()
    module = NetworkModule(network)
    crown, ibp = module.crown_bounds(lower, upper), module.interval_bounds(lower, upper)
    x = lower + (upper - lower) * torch.rand((4000, *lower.shape), generator=torch.Generator().manual_seed(1))
    pre = []
    with torch.no_grad():
        for box in range(len(lower)):
            h = x[:, box]
            for layer in network.layers:
                if layer.kind == "relu":
                    pre.append(h)
                h = layer.forward(h)
    n_relu = len(crown)
    for i, ((lo, hi), (ilo, ihi)) in enumerate(zip(crown, ibp)):
        assert bool((lo >= ilo).all()) and bool((hi <= ihi).all())
        for box in range(len(lower)):
            z = pre[box * n_relu + i]
            assert bool((z >= lo[box] - 1e-4).all()) and bool((z <= hi[box] + 1e-4).all())
    width = [sum(float((h - l).detach().sum()) for l, h in bounds) for bounds in (crown, ibp)]
    assert width[0] < width[1]


def test_crown_stability_loss_has_gradients_and_refuses_convolutions():
    network = mlp()
    lower, upper = _data(network, eps=0.1).boxes()
    module = NetworkModule(network)
    stability_loss(module, lower, upper, "crown").backward()
    feeding_relus = list(module.weights.values())[:-1]  # the output layer does not move any ReLU's bounds
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in feeding_relus)
    with pytest.raises(UnsupportedLayerError, match="convolution"):
        stability_loss(NetworkModule(cnn()), *_data(cnn()).boxes(), "crown")
    with pytest.raises(CertpruneError, match="RS bounds"):
        FinetuneSettings(rs_bounds="alpha")
