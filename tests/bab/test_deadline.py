"""The deadline holds in every phase: loading, the falsifier, alpha-CROWN, the MILP, both splitting loops,
several boxes, and the CLI. Time is a fake clock that the work itself advances (so many seconds per forward
pass or per bound computation): no wall-clock assert, nothing that flakes on a loaded machine."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import certprune.bab.search as search_module
import certprune.bounds.alpha as alpha_module
from certprune.bab.attack import Falsifier
from certprune.bab.instances import Instance, verify_instances
from certprune.bab.search import SearchSettings, verify_box
from certprune.bounds import AlphaCROWN
from certprune.deadline import Deadline, DeadlineExpired
from certprune.network import Dense, Network, ReLU
from certprune.onnx_io import load_onnx, save_onnx
from certprune.smt.milp import MilpResult, MilpStatus
from certprune.types import Verdict
from tests.netgen import random_network


class FakeClock:
    """Time moves only when the test (or the work it wraps) says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_deadline_counts_on_its_clock():
    clock = FakeClock()
    deadline = Deadline(10, clock)
    clock.advance(4)
    assert deadline.elapsed() == 4 and deadline.remaining() == 6 and not deadline.expired()
    part = deadline.share(0.5)
    assert part.remaining() == 3
    assert deadline.within(100).remaining() == 6  # never past the parent
    clock.advance(6)
    assert deadline.expired() and deadline.remaining() == 0 and part.expired()
    with pytest.raises(DeadlineExpired, match="loading"):
        deadline.check("loading")
    assert not Deadline.never(clock).expired()
    with pytest.raises(ValueError):
        Deadline(-1)


def test_loading_stops_at_the_deadline(tmp_path):
    network = random_network(2, 4, (3,), seed=1)
    save_onnx(network, tmp_path / "m.onnx")
    clock = FakeClock()
    deadline = Deadline(1, clock)
    clock.advance(2)
    with pytest.raises(DeadlineExpired):
        load_onnx(tmp_path / "m.onnx", deadline)
    assert load_onnx(tmp_path / "m.onnx", Deadline(1, clock)).input_shape == (3,)


def _costly(network: Network, clock: FakeClock, seconds: float) -> Network:
    """The network, with every forward pass advancing the clock by ``seconds``."""

    class Costly(Network):
        def __call__(self, x):
            clock.advance(seconds)
            return super().__call__(x)

        def to(self, dtype):
            return self

    return Costly(network.layers, network.input_shape, network.output_transform)


def test_falsifier_stops_within_one_pass_of_the_deadline():
    clock = FakeClock()
    network = _costly(random_network(2, 8, (4,), seed=2), clock, 1.0)
    impossible = [np.zeros((1, 3))], [np.array([-1.0])]  # 0 <= -1: no counterexample, the search never ends
    falsifier = Falsifier(network, -np.ones(4), np.ones(4), *impossible)
    for budget in (0.5, 7.0, 30.0):
        start = clock.now
        assert falsifier.round(Deadline(budget, clock), restarts=8, steps=1000, samples=4096) is None
        assert clock.now - start <= budget + 1.0  # at most the pass that was running when time ran out


def test_alpha_iterations_stop_at_the_deadline(monkeypatch):
    clock = FakeClock()
    original = alpha_module.output_bounds
    calls = []

    def counted(*args, **kwargs):
        clock.advance(1.0)
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(alpha_module, "output_bounds", counted)
    network = random_network(2, 16, (4,), seed=3)
    lower, upper = -torch.ones(1, 4), torch.ones(1, 4)
    AlphaCROWN(iterations=200, deadline=Deadline(5, clock)).compute(network, lower, upper)
    assert len(calls) <= 7  # two sides optimised together: one pass per step, and the step at the deadline
    assert len(calls) >= 5


def _hard_box():
    """A box that no method settles quickly: the exact minimum of y0 - y1 is -0.42015 (MILP), the property
    asks for y0 - y1 <= -0.43, so it holds, by a margin that takes thousands of domains to prove."""
    network = random_network(2, 16, (5,), seed=12, outputs=2)
    return network, -np.ones(5), np.ones(5), ((np.array([[1.0, -1.0]]), np.array([-0.43])),)


@pytest.mark.parametrize("input_split_dims", [16, 0])
def test_splitting_loops_keep_the_deadline(monkeypatch, input_split_dims):
    """Each bound computation costs 0.01 s per domain: batches shrink so that the last one ends near the
    deadline; the search answers timeout (or decides) and overshoots by about one domain."""
    clock = FakeClock()
    for name in ("CROWN", "AlphaCROWN", "IBP"):
        cls = getattr(search_module, name)

        class Timed(cls):
            def compute(self, network, lower, upper, *args, **kwargs):
                clock.advance(0.01 * len(lower))
                return super().compute(network, lower, upper, *args, **kwargs)

        monkeypatch.setattr(search_module, name, Timed)
    network, lower, upper, constraints = _hard_box()
    network = _costly(network, clock, 0.001)
    settings = SearchSettings(timeout=3, input_split_dims=input_split_dims, milp_max_unstable=-1)
    deadline = Deadline(3, clock)
    result = verify_box(network, lower, upper, constraints, settings, deadline=deadline)
    assert result.verdict in (Verdict.TIMEOUT, Verdict.VERIFIED)
    assert clock.now <= 3 + 0.1, result.settings  # one domain (0.01 s) or one falsifier pass late at most


def test_milp_gets_only_the_time_that_remains(monkeypatch):
    clock = FakeClock()
    limits = []

    def fake_milp(*args, time_limit=None, **kwargs):
        limits.append(time_limit)
        clock.advance(time_limit)
        return MilpResult(MilpStatus.TIMEOUT, reason="solver time limit")

    monkeypatch.setattr(search_module, "solve_milp", fake_milp)
    network, lower, upper, constraints = _hard_box()
    settings = SearchSettings(timeout=5, input_split_dims=0, milp_max_unstable=1000, milp_time_limit=20)
    clock.advance(0)
    result = verify_box(network, lower, upper, constraints, settings, deadline=Deadline(5, clock))
    assert result.verdict is Verdict.TIMEOUT
    assert limits and max(limits) <= 5 and clock.now <= 5


def test_no_milp_starts_in_less_time_than_the_last_one_took(monkeypatch):
    """A solver that overruns its time limit (as HiGHS can, by seconds) is not started again when less time
    remains than its last call took."""
    clock = FakeClock()
    calls = []

    def overrunning_milp(*args, time_limit=None, **kwargs):
        calls.append(clock.now)
        clock.advance(2)  # whatever its limit
        return MilpResult(MilpStatus.TIMEOUT, reason="solver time limit")

    monkeypatch.setattr(search_module, "solve_milp", overrunning_milp)
    network, lower, upper, constraints = _hard_box()
    settings = SearchSettings(timeout=5, input_split_dims=0, milp_max_unstable=1000, milp_time_limit=20)
    result = verify_box(network, lower, upper, constraints, settings, deadline=Deadline(5, clock))
    assert result.verdict in (Verdict.TIMEOUT, Verdict.VERIFIED)  # the search goes on by splitting
    assert len(calls) >= 2 and clock.now <= 5


def test_boxes_share_one_deadline(tmp_path, monkeypatch):
    clock = FakeClock()
    network, lower, upper, constraints = _hard_box()
    save_onnx(network, tmp_path / "m.onnx")
    seen = []

    def fake_verify_box(network, lower, upper, constraints, settings, replay, deadline, **options):
        seen.append(deadline.remaining())
        clock.advance(4)
        return search_module.Result(Verdict.VERIFIED, certificate=search_module.Certificate("fake"))

    import certprune.bab.instances as instances_module
    monkeypatch.setattr(instances_module, "verify_box", fake_verify_box)
    boxes = [Instance(f"box{i}", lower, upper, constraints) for i in range(4)]
    result = verify_instances(network, tmp_path / "m.onnx", boxes, SearchSettings(timeout=10),
                              Deadline(10, clock))
    assert seen == [10, 6, 2] and result.verdict is Verdict.TIMEOUT


def test_cli_timeout_covers_loading(tmp_path, monkeypatch):
    """With every clock reading a minute later, loading runs out of time: exit 20 and 'timeout' written."""
    import certprune.cli.robustness_run as run_module
    from certprune.cli.main import main

    network = Network((Dense(torch.eye(2), torch.zeros(2)), ReLU()), (2,), None)
    save_onnx(network, tmp_path / "m.onnx")
    (tmp_path / "p.vnnlib").write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
                                       "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
                                       "(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
                                       "(assert (>= X_1 0))\n(assert (<= X_1 1))\n(assert (<= Y_0 -1))\n")
    clock = FakeClock()

    def slow() -> float:
        clock.advance(60)
        return clock.now

    monkeypatch.setattr(run_module, "Deadline", lambda seconds: Deadline(seconds, slow))
    results = tmp_path / "out.txt"
    code = main(["verify", str(tmp_path / "m.onnx"), "--property", str(tmp_path / "p.vnnlib"), "--timeout", "30",
                 "--results-file", str(results)])
    assert code == 20 and results.read_text().split()[0] == "timeout"
