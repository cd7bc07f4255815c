"""CROWN keeps a deadline: a pass on a large conv net takes minutes, so it checks per layer chunk and raises
DeadlineExpired (no partial bound is sound to return); the search turns that into a timeout. Time is a fake
clock advanced by the work itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import certprune.bounds.crown as crown_module
from certprune.bab.search import SearchSettings, verify_box
from certprune.bounds import CROWN, IBP
from certprune.deadline import Deadline, DeadlineExpired
from certprune.types import Verdict
from tests.netgen import random_graph


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _slow_back_substitution(monkeypatch, clock: _Clock, seconds: float) -> None:
    original = crown_module.lower_rows

    def slow(*args, **kwargs):
        clock.now += seconds
        return original(*args, **kwargs)

    monkeypatch.setattr(crown_module, "lower_rows", slow)


def test_crown_raises_once_the_deadline_has_passed(monkeypatch):
    network = random_graph(3, kind="conv")
    lower = torch.zeros(1, *network.input_shape)
    clock = _Clock()
    _slow_back_substitution(monkeypatch, clock, 10.0)
    with pytest.raises(DeadlineExpired, match="CROWN"):
        CROWN(deadline=Deadline(15, clock)).compute(network, lower - 1, lower + 1)
    assert clock.now <= 30  # stopped within a chunk or two of the deadline, not after every layer
    clock.now = 0.0
    CROWN(deadline=Deadline(1e9, clock)).compute(network, lower - 1, lower + 1)  # enough time: no error


def test_search_reports_a_timeout_when_crown_runs_out(monkeypatch):
    network = random_graph(3, kind="conv")
    n = int(np.prod(network.input_shape))
    A = np.eye(3)[:1] - np.eye(3)[1:2]
    box = (-torch.ones(1, *network.input_shape), torch.ones(1, *network.input_shape))
    C = torch.tensor(A, dtype=torch.float32)
    ibp, crown = (float(method.compute(network, *box, C=C).output_lower[0, 0]) for method in (IBP(), CROWN()))
    assert ibp < crown
    b = np.array([(ibp + crown) / 2])  # y0 - y1 <= b is out of reach, and CROWN (not IBP) shows it
    clock = _Clock()
    _slow_back_substitution(monkeypatch, clock, 10.0)
    result = verify_box(network, -np.ones(n), np.ones(n), [(A, b)], SearchSettings(timeout=15, attack_restarts=1,
                        attack_steps=1), deadline=Deadline(15, clock))
    assert result.verdict is Verdict.TIMEOUT
