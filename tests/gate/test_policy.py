"""Policy files: every mistake is one line naming the file, the line and the key."""
from __future__ import annotations

import pytest

from certprune.errors import PropertyError
from certprune.spec.policy import Threshold, read_policy
from tests.conftest import REPO

MODEL = REPO / "models" / "mnist_mlp_100x2.onnx"
FAIR = REPO / "properties" / "german_fairness_sex.yaml"


def write(tmp_path, body: str):
    path = tmp_path / "policy.yaml"
    path.write_text(body.replace("MODEL", str(MODEL)).replace("FAIR", str(FAIR)))
    return path


def error_of(tmp_path, body: str) -> str:
    with pytest.raises(PropertyError) as caught:
        read_policy(write(tmp_path, body))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_full_policy_reads(tmp_path):
    policy = read_policy(write(tmp_path, """model: MODEL
baseline: MODEL
budget: 60
checks:
  - name: robust
    certify: {data: mnist, eps: [0.01, 0.02], samples: 5, timeout: 3}
    require:
      certified_accuracy: {0.01: ">= 90%", 0.02: ">= 0.8"}
      undecided: "<= 0.05"
      vs_baseline: {certified_accuracy: ">= -0.02"}
  - name: fair
    property: FAIR
    timeout: 5
    require: {holds: true, certified_share: ">= 0.5"}
  - name: facts
    facts: {data: mnist}
    require: {parameters: "<= 1e5", parity: true}
"""))
    robust, fair, facts = policy.checks
    assert robust.kind == "certify" and robust.eps == (0.01, 0.02) and robust.samples == 5
    assert robust.requirements[0].threshold == Threshold(">=", 0.9) and robust.requirements[0].eps == 0.01
    assert robust.requirements[-1].vs_baseline and robust.requirements[-1].label == "certified_accuracy vs baseline"
    assert fair.kind == "fairness" and fair.timeout == 5 and fair.requirements[0].threshold is True
    assert facts.kind == "facts" and facts.samples == 1000 and policy.budget == 60 and policy.sha256


@pytest.mark.parametrize("body, expected", [
    ("model: MODEL\nchecks:\n  - name: a\n    facts: {}\n    requir: {parity: true}\n",
     "line 5: unknown key 'requir' (did you mean 'require'?)"),
    ("model: MODEL\nchecks:\n  - name: a\n    facts: {}\n    require: {parameters: 1000}\n",
     "line 5: parameters: threshold 1000 must read like"),
    ("model: MODEL\nchecks:\n  - name: a\n    facts: {}\n    require: {parameters: '=> 5'}\n",
     "line 5: parameters: threshold '=> 5'"),
    ("model: missing.onnx\nchecks: []\n", "line 1: model: no such file"),
    ("model: MODEL\nchecks: []\n", "line 2: checks must be a non-empty list"),
    ("model: MODEL\nchecks:\n  - name: a\n    facts: {}\n    require: {holds: true}\n",
     "line 5: unknown key 'holds'"),
    ("model: MODEL\nchecks:\n  - name: a\n    certify: {data: mnist, eps: 0.1}\n    require:\n"
     "      vs_baseline: {certified_accuracy: '>= 0'}\n", "line 3: check 'a' has vs_baseline rules but the policy"),
    ("model: MODEL\nchecks:\n  - name: a\n    certify: {data: cifar, eps: 0.1}\n    require: {undecided: '<= 0'}\n",
     "line 4: unknown data set 'cifar'"),
    ("model: MODEL\nchecks:\n  - name: a\n    certify: {data: mnist, eps: 0.1}\n    require:\n"
     "      certified_accuracy: {0.2: '>= 0.5'}\n", "line 6: certified_accuracy: 0.2 is not one of the check's eps"),
    ("model: MODEL\nchecks:\n  - name: a\n    facts: {}\n    property: FAIR\n    require: {parity: true}\n",
     "line 3: check 'a' needs exactly one of certify, property, facts"),
    ("model: MODEL\nchecks:\n  - name: a\n    facts: {}\n    require: {parity: true}\n"
     "  - name: a\n    facts: {}\n    require: {parity: true}\n", "line 3: check name 'a' is used twice"),
    ("model: MODEL\nchecks:\n  - name: a\n    facts: {}\n", "line 3: check 'a' has no 'require'"),
    ("model: MODEL\nchecks:\n  - name: a\n    certify: {data: mnist, eps: 0.1, features: f1}\n"
     "    require: {undecided: '<= 0'}\n", "line 4: features must be a list of column names, got 'f1'"),
])
def test_mistakes_name_the_line_and_key(tmp_path, body, expected):
    message = error_of(tmp_path, body)
    assert "policy.yaml" in message and expected in message, message


def test_a_check_names_the_models_input_columns(tmp_path):
    """As --features does: a table with extra columns (ids, a second label) can be gated."""
    policy = read_policy(write(tmp_path, "model: MODEL\nchecks:\n  - name: a\n    certify: {data: mnist, eps: 0.1, "
                                         "label: y2, features: [f2, f1]}\n    require: {undecided: '<= 0'}\n"))
    (check,) = policy.checks
    assert check.label == "y2" and check.features == ("f2", "f1")
