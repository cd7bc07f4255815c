"""The twin computes both copies exactly; pruning from bounds keeps its outputs on the boxes."""
from __future__ import annotations

import numpy as np
import torch
from tests.fairness.fairnets import property_text, random_net

from certprune.bounds import CROWN, IBP
from certprune.fairness.twin import TwinLayout, build_twin, prune
from certprune.network import Affine, Dense, Network, ReLU
from certprune.spec.fairness import parse_fairness


def layout(relaxed=None, protected="[sex]"):
    return TwinLayout.of(parse_fairness(property_text(relaxed=relaxed, protected=protected)))


def test_twin_is_both_copies_exactly():
    net = random_net(4, 1, depth=3, outputs=3, width=6)
    lay = layout(relaxed="{a: 1}", protected="{b: [-1, 1], sex: all}")
    assert lay.size == 2 + 2 * 2 + 1  # shared a, c; p, p' for b and sex; delta for a
    twin = build_twin(net, lay)
    z = torch.tensor(np.random.default_rng(0).integers(-2, 4, size=(64, lay.size)), dtype=torch.float32)
    x1, x2 = (torch.from_numpy(v).float() for v in lay.pair(z.numpy()))
    assert torch.equal(x1[:, 1], z[:, 2]) and torch.equal(x2[:, 0], z[:, 0] + z[:, 6])
    Y = twin.to(torch.float64)(z.double())
    assert torch.allclose(Y, torch.cat([net.to(torch.float64)(x1.double()), net.to(torch.float64)(x2.double())],
                                       dim=1), rtol=0, atol=1e-12)
    W, W2 = net.layers[0].weight, twin.layers[0].weight
    # z = [a, c, b, sex, b', sex', delta_a]; the folded selection copies columns of W exactly
    assert torch.equal(W2[:6, :4], W[:, [0, 2, 1, 3]]) and not W2[:6, 4:].any()
    assert torch.equal(W2[6:, [0, 1, 4, 5, 6]], W[:, [0, 2, 1, 3, 0]]) and not W2[6:, 2:4].any()
    picked = build_twin(net, lay, outputs=(2,))(z)
    assert torch.equal(picked, twin(z)[:, [2, 5]])


def test_twin_of_a_net_with_affine_layers_and_output_pick():
    net = Network((Affine(torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0])), Dense(torch.randn(3, 2), torch.randn(3)),
                   ReLU(), Dense(torch.randn(2, 3), torch.randn(2)), Affine(torch.ones(2), torch.zeros(2))), (2,))
    prop = parse_fairness(property_text(ranges=(("a", 0, 3), ("sex", 0, 1))))
    lay = TwinLayout.of(prop)
    twin = build_twin(net, lay, outputs=(1,))
    z = torch.tensor([[1.0, 0.0, 1.0], [3.0, 1.0, 0.0]])
    x1, x2 = (torch.from_numpy(v).float() for v in lay.pair(z.numpy()))
    assert torch.allclose(twin(z), torch.stack([net(x1)[:, 1], net(x2)[:, 1]], dim=1))


def test_pruning_keeps_outputs_on_the_box_and_counts_per_copy():
    net = random_net(4, 2, width=12, depth=2)
    lay = layout()
    twin = build_twin(net, lay).to(torch.float64)
    lo = torch.tensor([[2.0, 1.0, 3.0, 0.0, 1.0]], dtype=torch.float64)
    hi = torch.tensor([[3.0, 2.0, 4.0, 0.0, 1.0]], dtype=torch.float64)
    ibp = IBP().compute(twin, lo, hi)
    crown = CROWN().compute(twin, lo, hi, prior=ibp)
    pruned = prune(twin, [("ibp", ibp), ("crown", crown)])
    stats = pruned.stats
    assert stats["neurons"] == 2 * 2 * 12
    removed = stats["copy1"]["inactive"] + stats["copy2"]["inactive"]
    assert removed > 0 and pruned.network.relu_count == twin.relu_count - removed
    assert sum(stats["stable_by"].values()) == stats["neurons"] - stats["copy1"]["unstable"] - stats["copy2"]["unstable"]
    z = lo + torch.rand(256, 5, dtype=torch.float64) * (hi - lo)
    assert torch.allclose(pruned.network(z), twin(z), atol=1e-12)
    assert all(len(s) == n for s, n in zip(pruned.states, pruned.network.relu_sizes()))
