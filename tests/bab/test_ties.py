"""Ties are decided by the model's own rule, never counted as counterexamples of local robustness.

The reproducers (tests/data/soundness/single_logit_tie): ``negabs`` is y0 = -|x0| and ``corner`` y0 = x0 - 0.5
on [0, 0.5], single-logit models that decide class 1 iff y0 > 0; ``two`` has logits (0, -|x0|), whose first
largest logit is class 0 everywhere. Every input of each ball is decided as the label, so the only right
answers are verified (or, at worst, undecided); before the fix each was reported falsified with a tie.
VNN-LIB keeps its own semantics: there the property text defines the unsafe set, ties included.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from certprune.bab.instances import Instance, verify_one
from certprune.bab.search import SearchSettings, _bisect
from certprune.cli.main import main
from certprune.spec.robustness import decision
from certprune.types import Verdict
from tests.conftest import REPO

TIES = REPO / "tests" / "data" / "soundness" / "single_logit_tie"


@pytest.mark.parametrize("name", ["negabs", "corner", "two"])
def test_a_tie_is_not_a_counterexample(tmp_path, name):
    out = tmp_path / "r.json"
    code = main(["verify", str(TIES / f"{name}.onnx"), "--property", str(TIES / f"{name}.yaml"), "--timeout", "20",
                 "--json", str(out), "--quiet"])
    report = json.loads(out.read_text())
    assert code == 0, report
    assert all(sample["status"] == "verified" for sample in report["samples"])


def test_decision_rule_breaks_ties_like_the_model():
    assert decision(np.array([0.0])) == 0 and decision(np.array([1e-30])) == 1
    assert decision(np.array([0.0, 0.0])) == 0 and decision(np.array([-1.0, 2.0, 2.0])) == 1


def test_vnnlib_semantics_keep_ties(tmp_path):
    """The same model and box as a VNN-LIB question 'y0 >= 0' (unsafe set y0 >= 0): x0 = 0 meets it."""
    from certprune.onnx_io import load_onnx

    path = TIES / "negabs.onnx"
    network = load_onnx(path)
    box = Instance("tie", np.array([-0.5]), np.array([0.5]), ((np.array([[-1.0]]), np.zeros(1)),))
    result = verify_one(network, path, box, SearchSettings(timeout=20))
    assert result.verdict is Verdict.FALSIFIED and result.counterexample.outputs[0] == 0.0
    labelled = Instance("tie", np.array([-0.5]), np.array([0.5]), box.constraints, label=0)
    assert verify_one(network, path, labelled, SearchSettings(timeout=20)).verdict is Verdict.VERIFIED


def test_bisection_ends_in_single_float32_inputs():
    """Two adjacent float32 numbers split into the two points, not into the same box again."""
    a = torch.tensor([[0.5]], dtype=torch.float32)
    b = torch.tensor([[float(np.nextafter(np.float32(0.5), np.float32(1)))]], dtype=torch.float32)
    lower, upper = _bisect(a, b, torch.tensor([0]))
    assert lower.flatten().tolist() == [a.item(), b.item()] and upper.flatten().tolist() == [a.item(), b.item()]
    wide_lo, wide_hi = _bisect(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([1]))
    assert wide_hi[0].tolist() == [1.0, 0.5] and wide_lo[1].tolist() == [0.0, 0.5]


def test_specification_rounds_toward_no_proof():
    """A right-hand side that float32 cannot hold is rounded up, never down; a summed row gets one float32
    step more; a row with a coefficient float32 cannot hold can never refute (rhs +inf)."""
    import numpy as np

    from certprune.bab.search import stack_constraints

    b = 3.991125645861615  # ACAS Xu property 1's bound, not a float32
    C, rhs, groups = stack_constraints([(np.array([[1.0, 0.0]]), np.array([b]))])
    assert b <= float(rhs[0]) < b + 1e-6
    _, rhs, groups = stack_constraints([(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0.5, 0.25]))])
    assert [float(v) for v in rhs[:2]] == [0.5, 0.25] and float(rhs[2]) > 0.75  # exact rows stay, the sum moves up
    _, rhs, _ = stack_constraints([(np.array([[0.1, 1.0]]), np.array([1.0]))])
    assert float(rhs[0]) == float("inf")
