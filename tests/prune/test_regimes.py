"""Training regimes: the eps schedule, FGSM, reproducible seeds, and certified training that verifies."""
from __future__ import annotations

import pytest
import torch

from certprune.errors import CertpruneError
from certprune.network import Dense, Flatten, Network, ReLU
from certprune.prune import (
    Adversarial, Certified, EpsSchedule, FinetuneSettings, Natural, NetworkModule, PruneData, certified,
    fgsm_attack, finetune, initialise, load_data, predict, task_loss,
)
from tests.prune.nets import cnn, mlp


def test_eps_schedule_is_zero_then_a_smooth_ramp_then_one():
    schedule = EpsSchedule(warmup=2, ramp=5, mid=0.4, beta=4)
    values = [schedule.factor(step, 10) for step in range(1, 81)]
    assert values[:20] == [0.0] * 20 and values[69:] == [1.0] * 11
    assert all(a <= b for a, b in zip(values, values[1:])) and 0 < values[20] < 1e-3
    # The polynomial and the linear piece meet at the middle with the same slope.
    mid = 20 + int(50 * 0.4)  # values[i] is step i + 1
    slopes = [values[mid - 1] - values[mid - 2], values[mid + 1] - values[mid]]
    assert abs(slopes[0] - slopes[1]) < 0.15 * slopes[1]
    assert EpsSchedule().factor(1, 10) == 1.0  # no warm-up, no ramp: the full eps from the first batch
    with pytest.raises(CertpruneError, match="eps schedule"):
        EpsSchedule(mid=2.0)


def test_fgsm_goes_to_the_box_corner_and_raises_the_loss():
    network = mlp()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 6, generator=g)
    y = predict(network(x))
    lower, upper = (x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1)
    module = NetworkModule(network)
    x_adv = fgsm_attack(module, x, y, lower, upper)
    assert bool(((x_adv == lower) | (x_adv == upper) | (x_adv == x)).all())
    with torch.no_grad():
        assert float(task_loss(module(x_adv), y)) > float(task_loss(module(x), y))


def _task(n=96, seed=0):
    network = cnn()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *network.input_shape), generator=g)
    with torch.no_grad():
        y = network(x.flip(0)).argmax(dim=1)
    return network, PruneData(x, y, 0.05, 0.0, 1.0)


@pytest.mark.parametrize("regime", [Natural(), Adversarial(), Adversarial(attack="pgd", steps=2),
                                    Certified(bound="ibp"), Certified(natural_weight=0.5)],
                         ids=lambda r: f"{r.name}-{getattr(r, 'bound', getattr(r, 'attack', ''))}")
def test_training_is_reproducible_from_its_seed(regime):
    network, data = _task()
    settings = FinetuneSettings(epochs=2, batch_size=32, regime=regime, eps_schedule=EpsSchedule(ramp=1),
                                nrs_weight=1e-2, grad_clip=8.0, lr_decay_at=(0.5,))
    first, second = finetune(network, data, settings), finetune(network, data, settings)
    other = finetune(network, data, FinetuneSettings(**{**settings.__dict__, "seed": 1}))
    for a, b, c in zip(first.layers, second.layers, other.layers):
        if hasattr(a, "weight"):
            assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
            assert not torch.equal(a.weight, network.layers[first.layers.index(a)].weight)
    assert any(hasattr(a, "weight") and not torch.equal(a.weight, c.weight) for a, c in zip(first.layers, other.layers))


def test_certified_training_verifies_more_than_its_naturally_trained_twin():
    """A 784-64-10 MLP from the same seeded start on 1,000 MNIST images, 6 epochs each; CROWN proves labels
    on 100 test boxes at eps 0.1 (a lower bound of what complete verification proves)."""
    train = load_data("mnist", "train", 0.1).take(1000)
    test = load_data("mnist", "test", 0.1).take(100)
    architecture = Network((Flatten(), Dense(torch.zeros(64, 784), torch.zeros(64)), ReLU(),
                            Dense(torch.zeros(10, 64), torch.zeros(10))), (1, 28, 28))
    start = initialise(architecture, train, seed=0)
    proven, accuracy = {}, {}
    for regime in (Natural(), Certified()):
        settings = FinetuneSettings(epochs=6, batch_size=50, lr=2e-3, regime=regime,
                                    eps_schedule=EpsSchedule(warmup=1, ramp=3))
        trained = finetune(start, train, settings)
        proven[regime.name] = int(certified(trained, test).sum())
        with torch.no_grad():
            accuracy[regime.name] = float((predict(trained(test.x)) == test.y).float().mean())
    assert accuracy["natural"] > 0.8 and accuracy["certified"] > 0.7
    assert proven["certified"] >= proven["natural"] + 30, proven


def test_the_nrs_and_slimming_regularisers_do_what_they_penalise():
    from certprune.prune import nrs_loss, unfold_batchnorm
    from certprune.prune.module import interval_pass, unit_affines

    network, data = _task()
    network = unfold_batchnorm(network)
    lower, upper = data.boxes()
    base = FinetuneSettings(epochs=3, batch_size=32, lr=1e-2)
    plain = finetune(network, data, base)
    nrs_trained = finetune(network, data, FinetuneSettings(**{**base.__dict__, "nrs_weight": 5.0}))
    slim_trained = finetune(network, data, FinetuneSettings(**{**base.__dict__, "slim_weight": 1.0}))
    with torch.no_grad():
        losses = [float(nrs_loss(m, interval_pass(m, lower, upper)[0]))
                  for m in (NetworkModule(plain), NetworkModule(nrs_trained))]
        scales = [float(torch.cat([s.abs() for s in NetworkModule(n).scales.values()]).mean())
                  for n in (plain, slim_trained)]
    assert losses[1] < losses[0] and scales[1] < scales[0]
    assert len(unit_affines(slim_trained)) == len(unit_affines(network))
