"""The contract every pruning criterion meets, on small random networks with dense and conv layers.

Scores have one value per unit; selecting at sparsity s removes that share; the surgically pruned network
equals its masked original (outputs of the removed units overwritten) and its ONNX file is smaller and
agrees with onnxruntime. Removing units that bounds prove dead on the data boxes changes nothing there.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from certprune.bounds import IBP
from certprune.network import Conv2d, Dense
from certprune.onnx_io import load_onnx, save_onnx
from certprune.parity import check_parity
from certprune.prune import (
    NRS, SNIP, BatchNormScale, Magnitude, PruneData, Random, Stability, Taylor, dead_units, mask_units, mean_fill,
    prunable_layers, prune_dead, remove_units, select_units,
)
from certprune.prune.importance import CRITERIA
from tests.prune.nets import NETWORKS, with_dead_units

SPARSITY = 0.5
EPS = 0.05


def _gammas(network):
    """Random BatchNorm scales for every prunable layer, keyed by linear-layer position."""
    g = torch.Generator().manual_seed(7)
    linear = [i for i, layer in enumerate(network.layers) if isinstance(layer, (Dense, Conv2d))]
    return {linear.index(info.producer): torch.randn(info.size, generator=g) for info in prunable_layers(network)}


CRITERIA_UNDER_TEST = {
    "magnitude": lambda net: Magnitude(),
    "random": lambda net: Random(seed=3),
    "taylor": lambda net: Taylor(samples=48, batch_size=16),
    "snip": lambda net: SNIP(samples=48, batch_size=16),
    "slimming": lambda net: BatchNormScale(_gammas(net)),
    "stability": lambda net: Stability(samples=16),
    "stability-ibp": lambda net: Stability(method=IBP(), samples=16, gammas=_gammas(net)),
    "nrs": lambda net: NRS(samples=16),
    "nrs-gamma": lambda net: NRS(samples=16, gammas=_gammas(net)),
}


def test_every_registered_criterion_is_under_test():
    assert set(CRITERIA) <= set(CRITERIA_UNDER_TEST)


def _data(network, n=48, seed=0) -> PruneData:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *network.input_shape), generator=g)
    classes = max(2, math.prod(network.output_shape))
    return PruneData(x, torch.randint(0, classes, (n,), generator=g), EPS, 0.0, 1.0)


def _box_samples(data: PruneData, per_box=4, seed=1):
    lower, upper = data.boxes()
    g = torch.Generator().manual_seed(seed)
    u = torch.rand((per_box, *lower.shape), generator=g)
    return (lower + u * (upper - lower)).reshape(-1, *lower.shape[1:])


def _onnx_weights(path):
    graph = onnx.load(str(path)).graph
    return {t.name: numpy_helper.to_array(t).shape for t in graph.initializer if t.name.endswith("_W")}


@pytest.mark.parametrize("net_name", sorted(NETWORKS))
@pytest.mark.parametrize("criterion_name", sorted(CRITERIA_UNDER_TEST))
def test_criterion_contract(criterion_name, net_name, tmp_path):
    network = with_dead_units(NETWORKS[net_name]())
    data = _data(network)
    infos = prunable_layers(network)
    scores = CRITERIA_UNDER_TEST[criterion_name](network).scores(network, data)

    assert len(scores) == len(infos)
    for s, info in zip(scores, infos):
        assert tuple(s.shape) == (info.size,) and bool(torch.isfinite(s).all())

    remove = select_units(network, scores, SPARSITY)
    assert [int(m.sum()) for m in remove] == [round(SPARSITY * i.size) for i in infos]
    pruned = remove_units(network, remove)
    assert [i.size for i in prunable_layers(pruned)] == [i.size - round(SPARSITY * i.size) for i in infos]

    x = torch.rand((64, *network.input_shape), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), mask_units(network, remove)(x), atol=1e-6, rtol=0)
        fill = mean_fill(network, data.x)
        torch.testing.assert_close(remove_units(network, remove, fill)(x), mask_units(network, remove, fill)(x),
                                   atol=1e-6, rtol=0)

    path = tmp_path / "pruned.onnx"
    save_onnx(pruned, path)
    original_path = tmp_path / "original.onnx"
    save_onnx(network, original_path)
    before, after = _onnx_weights(original_path), _onnx_weights(path)
    assert sum(np.prod(s) for s in after.values()) < sum(np.prod(s) for s in before.values())
    for index, layer in enumerate(pruned.layers):
        if isinstance(layer, (Dense, Conv2d)):
            assert after[f"{layer.kind}_{index}_W"] == tuple(layer.weight.shape)
    assert load_onnx(path).relu_sizes() == pruned.relu_sizes()
    bounds = (np.zeros(network.input_shape), np.ones(network.input_shape))
    assert check_parity(pruned, path, bounds=bounds).ok


@pytest.mark.parametrize("net_name", sorted(NETWORKS))
def test_removing_dead_units_is_exact_on_the_boxes(net_name):
    network = with_dead_units(NETWORKS[net_name]())
    data = _data(network)
    lower, upper = data.boxes()
    dead = dead_units(network, lower, upper)
    assert sum(int(m.sum()) for m in dead) > 0  # the planted dead units are found

    pruned = prune_dead(network, lower, upper)
    assert pruned.relu_count < network.relu_count
    x = _box_samples(data)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), network(x), atol=1e-6, rtol=0)

    # The stability criterion ranks units dead on every box below all others: pruning exactly that share
    # removes only dead units, so the result equals the original on the boxes too.
    scores = Stability(samples=len(data)).scores(network, data)
    remove = [torch.zeros_like(m) for m in dead]
    for k, (s, m) in enumerate(zip(scores, dead)):
        remove[k][torch.argsort(s, stable=True)[: int(m.sum())]] = True
        assert bool((remove[k] == m).all())
    with torch.no_grad():
        torch.testing.assert_close(remove_units(network, remove)(x), network(x), atol=1e-6, rtol=0)
