"""The a-posteriori float32 error bound against exact rational arithmetic on adversarial near-ties.

Ground truth: the exact real value of the network with its float32 weights (``fractions.Fraction``), and the
float32 result of onnxruntime running the saved model. The bound must cover their difference on every
point (sound) and be far below the a-priori margin it replaces (tight).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from certprune.bounds.rounding import forward_error
from certprune.bounds.floaterror import Rounding, float32_error, graph_matches
from certprune.network import Affine, Dense, Network, ReLU
from certprune.onnx_io import load_onnx, save_onnx
from certprune.runtime import OnnxRuntimeModel


def exact_outputs(network: Network, x: np.ndarray) -> list[list[Fraction]]:
    """The network on integer inputs in exact rational arithmetic, with its float32 weights as they are."""
    out = []
    for row in x:
        values = [Fraction(int(v)) for v in row]
        for layer in network.layers:
            if isinstance(layer, Dense):
                W = layer.weight.to(torch.float32).double().tolist()
                b = layer.bias.to(torch.float32).double().tolist()
                values = [sum((Fraction(w) * v for w, v in zip(r, values)), Fraction(c)) for r, c in zip(W, b)]
            elif isinstance(layer, ReLU):
                values = [max(v, Fraction(0)) for v in values]
            else:
                raise AssertionError(f"no exact rule for {layer.kind}")
        out.append(values)
    return out


def cancelling_net(seed: int, n_in: int = 6, width: int = 12, depth: int = 2) -> Network:
    """Large weights of both signs on inputs up to 20,000: hidden values of 1e4 to 1e6 that cancel."""
    gen = torch.Generator().manual_seed(seed)
    layers, size = [], n_in
    for _ in range(depth):
        layers += [Dense(torch.randn(width, size, generator=gen) * 3, torch.randn(width, generator=gen) * 100), ReLU()]
        size = width
    layers.append(Dense(torch.randn(1, size, generator=gen), torch.zeros(1)))
    return Network(tuple(layers), (n_in,), None).to(torch.float32)


def near_tie(network: Network, x: np.ndarray) -> Network:
    """The network with its last bias moved so that its exact output at ``x`` is within an ulp of 0."""
    exact = exact_outputs(network, x[None])[0][0]
    last = network.layers[-1]
    bias = torch.tensor([float(Fraction(float(last.bias[0])) - exact)], dtype=torch.float32)
    return Network(network.layers[:-1] + (Dense(last.weight, bias),), network.input_shape, None)


def check(tmp_path, network: Network, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, name: str):
    """(ratio of the largest actual error to the bound, bound on the box, old a-priori bound on the box)."""
    path = tmp_path / f"{name}.onnx"
    save_onnx(network, path)
    loaded = load_onnx(path)
    assert graph_matches(str(path), loaded)
    got = OnnxRuntimeModel(path)(x.astype(np.float32))[:, 0]
    exact = [row[0] for row in exact_outputs(loaded, x)]
    actual = np.array([abs(Fraction(float(g)) - e) for g, e in zip(got, exact)], dtype=np.float64)
    integer = torch.ones(x.shape[1], dtype=torch.bool)
    at_points = float32_error(loaded.to(torch.float64), torch.from_numpy(x), torch.from_numpy(x),
                              integer=integer)[:, 0].numpy()
    assert np.all(actual <= at_points), (actual, at_points)
    box = float32_error(loaded.to(torch.float64), torch.from_numpy(lo[None]), torch.from_numpy(hi[None]),
                        integer=integer)[0, 0].item()
    assert actual.max() <= box
    old = forward_error(loaded, torch.from_numpy(lo[None]), torch.from_numpy(hi[None]))[0, 0].item()
    return actual.max() / at_points.max(), box, old


@pytest.mark.parametrize("seed", range(6))
def test_bound_covers_onnxruntime_at_near_ties(tmp_path, seed):
    """Exact outputs within an ulp of 0 after heavy cancellation: the float32 result's error is covered
    at each point and on the box around them, and the box's bound is below the a-priori margin."""
    rng = np.random.default_rng(seed)
    lo = np.array([0, 0, 0, 10000, 0, 0], dtype=np.float64)
    hi = np.array([3, 2, 9, 10100, 4, 1], dtype=np.float64)
    x = np.floor(lo + rng.random((40, 6)) * (hi - lo + 1))
    network = near_tie(cancelling_net(seed), x[0])
    exact0 = exact_outputs(network, x[:1])[0][0]
    assert abs(exact0) <= 2.0**-20 * max(1.0, abs(float(network.layers[-1].bias[0])))  # a near-tie indeed
    ratio, box, old = check(tmp_path, network, x, lo, hi, f"tie{seed}")
    assert 0 < ratio <= 1
    # tighter even where every neuron is live (no dead neuron to drop): 5x to 16x on these nets
    assert box * 4 < old


def test_bound_is_reached_within_a_small_factor_somewhere(tmp_path):
    """Not vacuous: over many cancelling points some actual error is a visible share of its bound."""
    rng = np.random.default_rng(7)
    lo, hi = np.zeros(6), np.full(6, 20000.0)
    x = np.floor(lo + rng.random((200, 6)) * (hi - lo + 1))
    ratio, _, _ = check(tmp_path, cancelling_net(11, depth=1, width=30), x, lo, hi, "wide")
    assert ratio > 1e-3


def test_dead_neurons_with_large_terms_carry_no_error(tmp_path):
    """Neurons stably off over the box (huge negative pre-activations) output an exact 0 in float32: the
    a-priori bound charged their rounding to the output, the a-posteriori one does not."""
    W1 = torch.tensor([[1.0, 0.0]] + [[-100.0, 0.0]] * 8 + [[0.0, 1.0]])
    b1 = torch.tensor([0.0] + [-1.0] * 8 + [0.0])
    W2 = torch.tensor([[2e-4] + [1.0] * 8 + [-1e-4]])
    network = Network((Dense(W1, b1), ReLU(), Dense(W2, torch.tensor([-1.99995]))), (2,), None)
    lo, hi = np.array([9990.0, 0.0]), np.array([10010.0, 1.0])
    x = np.array([[a, s] for a in range(9990, 10011) for s in (0, 1)], dtype=np.float64)
    _, box, old = check(tmp_path, network, x, lo, hi, "dead")
    assert box < 1e-5 and old > 1.0


def test_folded_graph_keeps_the_a_priori_allowance(tmp_path):
    """A normalisation folded into the first layer: the network is not the graph, so the bound keeps the
    spare terms and safety factor, and still covers onnxruntime."""
    gen = torch.Generator().manual_seed(3)
    layers = (Affine(torch.full((4,), 1 / 3.0), torch.full((4,), -0.7)), Dense(torch.randn(8, 4, generator=gen),
              torch.randn(8, generator=gen)), ReLU(), Dense(torch.randn(1, 8, generator=gen), torch.zeros(1)))
    path = tmp_path / "folded.onnx"
    save_onnx(Network(layers, (4,), None), path)
    loaded = load_onnx(path)
    assert not graph_matches(str(path), loaded)
    x = np.floor(np.random.default_rng(0).random((50, 4)) * 1000)
    got = OnnxRuntimeModel(path)(x.astype(np.float32))[:, 0].astype(np.float64)
    exact = loaded.to(torch.float64)(torch.from_numpy(x))[:, 0].numpy()  # folded weights: the model we reason on
    bound = float32_error(loaded.to(torch.float64), torch.from_numpy(x), torch.from_numpy(x),
                          integer=torch.ones(4, dtype=torch.bool), rounding=Rounding(exact_graph=False))[:, 0]
    assert np.all(np.abs(got - exact) <= bound.numpy())
    tight = float32_error(loaded.to(torch.float64), torch.from_numpy(x), torch.from_numpy(x),
                          integer=torch.ones(4, dtype=torch.bool))[:, 0]
    assert torch.all(bound > tight)


def test_real_inputs_count_their_own_rounding():
    """A real-valued input is rounded to float32 on its way in (u |x|); an integer one is exact."""
    network = Network((Dense(torch.tensor([[1.0]]), torch.zeros(1)),), (1,), None)
    lo, hi = torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([[4.0]], dtype=torch.float64)
    real = float32_error(network, lo, hi, integer=torch.tensor([False]))[0, 0].item()
    whole = float32_error(network, lo, hi, integer=torch.tensor([True]))[0, 0].item()
    assert real - whole >= 4 * 2.0**-24 * (1 - 1e-9)
    tenth = torch.tensor([[0.1]], dtype=torch.float64)  # no float32: rounds even as a single point
    assert float32_error(network, tenth, tenth)[0, 0].item() >= 0.1 * 2.0**-24


def dead_neuron_model(s: float, a0: float) -> Network:
    """y = 2e-4 (a - a0) + s * sex, plus eight neurons relu(-100 a - 1) that are off on a >= 0 but whose
    huge terms made the a-priori float margin about 1 (the Fairify German models have many of them)."""
    W1 = torch.tensor([[1.0, 0.0]] + [[-100.0, 0.0]] * 8 + [[0.0, 1.0]])
    b1 = torch.tensor([0.0] + [-1.0] * 8 + [0.0])
    W2 = torch.tensor([[2e-4] + [1.0] * 8 + [s]])
    return Network((Dense(W1, b1), ReLU(), Dense(W2, torch.tensor([-2e-4 * a0]))), (2,), None)


@pytest.mark.parametrize("unfair", [False, True])
def test_engine_decides_near_ties_the_a_priori_margin_left_open(tmp_path, unfair):
    """Logit gaps of 5e-5 to 1e-4 on a in [0, 20000]: fair (sex moves the logit by 2e-5 and no integer a
    sits closer to the threshold), or unfair at the single point a = 10000 (logits +-5e-5). The a-priori
    margin covered thousands of pairs (only replaying each could settle them: with it the engine was still
    undecided after 60 s and ~2,500 replayed pairs, both variants); the new one covers none, so bounds and the
    MILP decide in a handful of leaves, without replaying single pairs."""
    from certprune.fairness import search
    from certprune.types import Verdict
    from tests.fairness.fairnets import property_text, setup

    network = dead_neuron_model(-1e-4, 9999.75) if unfair else dead_neuron_model(2e-5, 10000.5)
    text = property_text(ranges=(("a", 0, 20000), ("sex", 0, 1)))
    problem, referee, parts = setup(tmp_path, network, text, "tie", samples=1, attack_steps=0)
    lo, hi = problem.rows(parts[0])
    old = forward_error(problem.twin, torch.from_numpy(lo), torch.from_numpy(hi)).max().item()
    logits = network.to(torch.float64)(torch.tensor([[a, s] for a in range(20001) for s in (0, 1)],
                                                    dtype=torch.float64))[:, 0]
    assert int((logits.abs() < old).sum()) > 2000  # pairs the old margin hid
    assert problem.float_error(lo, hi).max() < 1e-5
    outcome = search.decide(problem, referee, parts[0], float("inf"))
    assert outcome.verdict is (Verdict.FALSIFIED if unfair else Verdict.VERIFIED)
    if unfair:
        assert outcome.counterexample["x"]["a"] == 10000 and outcome.counterexample["replayed"]
    else:
        assert outcome.details["leaves"] < 200 and "replay" not in outcome.details["closed_by"]
