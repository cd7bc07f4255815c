"""`certprune gate` end to end: the shipped example gates, JUnit that parses, the cache, baselines, budgets,
and bad input as one line with exit 2 and nothing half-written."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from junitparser import Error, Failure, JUnitXml

from certprune.cli.main import main
from certprune.runtime import OnnxRuntimeModel
from tests.conftest import REPO, one_error_line

EXAMPLES = REPO / "examples" / "gate"
MNIST = REPO / "models" / "mnist_mlp_100x2.onnx"
GERMAN = REPO / "models" / "german_small.onnx"


def gate(tmp_path, policy, *extra):
    out = tmp_path / "out"
    code = main(["gate", str(policy), "--junit", str(out / "junit.xml"), "--json", str(out / "gate.json"),
                 "--cache", str(tmp_path / "cache"), "--quiet", *extra])
    return code, out


def cases(junit_path):
    return [case for suite in JUnitXml.fromfile(str(junit_path)) for case in suite]


def test_pass_example_exits_0_and_a_second_run_comes_from_the_cache(tmp_path):
    code, out = gate(tmp_path, EXAMPLES / "pass.yaml")
    assert code == 0
    junit = cases(out / "junit.xml")
    assert [c.name for c in junit] == ["robust-mnist", "model-facts"] and all(c.is_passed for c in junit)
    first = json.loads((out / "gate.json").read_text())
    assert first["outcome"] == "pass" and not any(c["cached"] for c in first["checks"])
    code, out = gate(tmp_path, EXAMPLES / "pass.yaml")
    second = json.loads((out / "gate.json").read_text())
    assert code == 0 and all(c["cached"] for c in second["checks"])
    assert [c["figures"] for c in second["checks"]] == [c["figures"] for c in first["checks"]]


def test_fail_example_exits_10_with_replayable_counterexamples(tmp_path):
    code, out = gate(tmp_path, EXAMPLES / "fail.yaml")
    assert code == 10
    fair = next(c for c in cases(out / "junit.xml") if c.name == "fair-sex")
    (failure,) = fair.result
    assert isinstance(failure, Failure) and "holds is false" in failure.message
    files = sorted((out / "junit-counterexamples").glob("fair-sex-*.json"))
    assert files
    example = json.loads(files[0].read_text())
    runtime = OnnxRuntimeModel(GERMAN)
    pair = np.array([example["x"], example["x_prime"]], dtype=np.float32)
    outputs = runtime(pair).reshape(2, -1)
    assert np.allclose(outputs, [example["outputs"], example["outputs_prime"]], atol=1e-6)
    assert example["decisions"][0] != example["decisions"][1]


def policy_file(tmp_path, body: str):
    path = tmp_path / "policy.yaml"
    path.write_text(body.replace("MNIST", str(MNIST)).replace("GERMAN", str(GERMAN)))
    return path


FACTS = """model: MNIST
baseline: BASE
checks:
  - name: facts
    facts: {data: mnist, samples: 200}
    require:
      parity: true
      vs_baseline: {clean_accuracy: ">= -0.01", parameters: "<= 0"}
"""


def test_baseline_model_and_stored_baseline_result(tmp_path):
    policy = policy_file(tmp_path, FACTS.replace("BASE", str(MNIST)))
    code, out = gate(tmp_path, policy)
    result = json.loads((out / "gate.json").read_text())
    assert code == 0 and result["baseline"]["name"] == "mnist_mlp_100x2"
    (check,) = result["checks"]
    assert check["baseline_figures"]["parameters"] == check["figures"]["parameters"]
    stored = tmp_path / "baseline.json"
    shutil.copy(out / "gate.json", stored)
    bigger = policy_file(tmp_path, FACTS.replace("BASE", str(stored)).replace('"<= 0"', '"< 0"'))
    code, out = gate(tmp_path, bigger)
    assert code == 10  # the model is no smaller than the stored baseline


def test_another_model_is_not_taken_from_the_cache(tmp_path):
    policy = policy_file(tmp_path, "model: MNIST\nchecks:\n  - name: f\n    facts: {}\n    require: {parity: true}\n")
    gate(tmp_path, policy)
    code, out = gate(tmp_path, policy, "--model", str(REPO / "models" / "mnist_mlp_256x3.onnx"))
    result = json.loads((out / "gate.json").read_text())
    assert code == 0 and not result["checks"][0]["cached"] and result["model"]["name"] == "mnist_mlp_256x3"


def test_a_spent_budget_is_inconclusive_and_not_cached(tmp_path):
    policy = policy_file(tmp_path, """model: MNIST
checks:
  - name: robust
    certify: {data: mnist, eps: 0.01, samples: 3}
    budget: 0.000001
    require: {certified_accuracy: ">= 0.5"}
""")
    code, out = gate(tmp_path, policy)
    (check,) = json.loads((out / "gate.json").read_text())["checks"]
    assert code == 20 and check["outcome"] == "inconclusive" and not check["complete"]
    assert isinstance(cases(out / "junit.xml")[0].result[0], Error)
    assert not list((tmp_path / "cache").glob("*.json"))


def test_markdown_goes_to_the_github_step_summary(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    policy = policy_file(tmp_path, "model: MNIST\nchecks:\n  - name: f\n    facts: {}\n    require: {parity: true}\n")
    code, out = gate(tmp_path, policy, "--markdown", str(tmp_path / "table.md"))
    assert code == 0 and "| f | pass | parity |" in summary.read_text()
    assert (tmp_path / "table.md").read_text() in summary.read_text()



def test_a_property_that_does_not_fit_the_model_is_exit_2(tmp_path, capsys):
    policy = policy_file(tmp_path, f"model: MNIST\nchecks:\n  - name: f\n    property: "
                                   f"{REPO / 'properties' / 'german_fairness_sex.yaml'}\n    require: {{holds: true}}\n")
    code, out = gate(tmp_path, policy)
    assert code == 2 and not out.exists()
    line = one_error_line(capsys)
    assert "german_fairness_sex.yaml" in line and "policy.yaml line 3, check 'f'" in line


def test_a_label_the_data_file_lacks_names_the_policy_line(tmp_path, capsys):
    data = tmp_path / "table.csv"
    data.write_text("a,b,target\n0.1,0.2,1\n0.3,0.4,0\n")
    policy = policy_file(tmp_path, f"model: MNIST\nchecks:\n  - name: f\n    facts: {{}}\n    require: {{parity: true}}\n"
                                   f"  - name: robust\n    certify: {{data: {data}, label: taget, eps: [0.01]}}\n"
                                   f"    require: {{certified_accuracy: '>= 0.5'}}\n")
    code, out = gate(tmp_path, policy)
    line = one_error_line(capsys)
    assert code == 2 and not out.exists()
    assert "policy.yaml line 6, check 'robust'" in line and "no column 'taget'" in line


def test_an_unwritable_output_is_exit_2_and_nothing_half_written(tmp_path, capsys):
    policy = policy_file(tmp_path, "model: MNIST\nchecks:\n  - name: f\n    facts: {}\n    require: {parity: true}\n")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["gate", str(policy), "--json", str(blocker / "gate.json"), "--no-cache", "--quiet"])
    assert code == 2 and "cannot write" in one_error_line(capsys)
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("body", ["model: MNIST\nchecks:\n  - name: f\n    facts: {}\n    require: {parity: yes please}\n"])
def test_a_malformed_policy_is_exit_2(tmp_path, capsys, body):
    code, _ = gate(tmp_path, policy_file(tmp_path, body))
    assert code == 2 and "policy.yaml line 5: parity must be true or false" in one_error_line(capsys)


def test_a_share_threshold_above_100_percent_is_exit_2(tmp_path, capsys):
    body = "model: MNIST\nchecks:\n  - name: f\n    facts: {}\n    require:\n      clean_accuracy: \">= 150%\"\n"
    code, _ = gate(tmp_path, policy_file(tmp_path, body))
    line = one_error_line(capsys)
    assert code == 2 and "policy.yaml line 6" in line and "at most 1 (100%)" in line


def test_the_label_and_feature_columns_are_part_of_a_checks_cache_key():
    """Two checks that differ only in their label column must not share a cached result (a typo in the label
    was served the earlier run's FAIL instead of its error)."""
    from certprune.gate.checks import describe
    from certprune.spec.policy import Check

    for kind in ("certify", "facts"):
        a, b = (Check("c", kind, 1, (), data="mnist", label=label, eps=(0.01,)) for label in ("y", "yy"))
        assert describe(a).settings != describe(b).settings
        a, b = (Check("c", kind, 1, (), data="mnist", features=f, eps=(0.01,)) for f in (("a", "b"), ("b", "a")))
        assert describe(a).settings != describe(b).settings


def test_a_data_file_counts_by_its_content_in_a_checks_cache_key(tmp_path):
    """A moved or renamed data file with the same content keeps its cached result; another content does not."""
    from certprune.gate.checks import describe
    from certprune.spec.policy import Check

    first, second = tmp_path / "a.csv", tmp_path / "moved" / "b.csv"
    second.parent.mkdir()
    first.write_text("x,label\n0.5,1\n")
    second.write_text("x,label\n0.5,1\n")
    keys = [describe(Check("c", "certify", 1, (), data=str(p), eps=(0.01,))).key_header("m") for p in (first, second)]
    assert keys[0] == keys[1] and str(tmp_path) not in str(keys[0])
    second.write_text("x,label\n0.25,1\n")
    assert describe(Check("c", "certify", 1, (), data=str(second), eps=(0.01,))).key_header("m") != keys[0]


CERTIFY = """model: MNIST
BASELINE
checks:
  - name: robust
    certify: {data: mnist, eps: EPS, samples: SAMPLES, timeout: 5}
    require: REQUIRE
"""


def _certify_policy(tmp_path, eps, samples, baseline=None, require='{certified_accuracy: ">= 0"}'):
    body = CERTIFY.replace("EPS", eps).replace("SAMPLES", str(samples)).replace("REQUIRE", require)
    return policy_file(tmp_path, body.replace("BASELINE", f"baseline: {baseline}" if baseline else ""))


def test_a_stored_baseline_of_another_eps_kind_or_sample_count_is_named(tmp_path, capsys):
    """A stored gate result whose check of the same name holds other eps or is of another kind is one line,
    exit 2 (it was a KeyError traceback); other samples are compared with a warning."""
    code, out = gate(tmp_path, _certify_policy(tmp_path, "0.01", 3))
    stored = tmp_path / "base.json"
    shutil.copy(out / "gate.json", stored)
    vs = '{vs_baseline: {certified_accuracy: ">= -1"}}'
    assert gate(tmp_path, _certify_policy(tmp_path, "[0.01, 0.02]", 3, stored, vs))[0] == 2
    assert "has no figures at eps 0.02 (it has 0.01)" in one_error_line(capsys)
    facts = policy_file(tmp_path, FACTS.replace("BASE", str(MNIST)))
    gate(tmp_path, facts)
    shutil.copy(tmp_path / "out" / "gate.json", tmp_path / "facts.json")
    renamed = json.loads((tmp_path / "facts.json").read_text())
    renamed["checks"][0]["name"] = "robust"
    (tmp_path / "facts.json").write_text(json.dumps(renamed))
    assert gate(tmp_path, _certify_policy(tmp_path, "0.01", 3, tmp_path / "facts.json", vs))[0] == 2
    assert "is a facts check, this policy's is a certify check" in one_error_line(capsys)
    with pytest.warns(UserWarning, match=r"measured with other settings \(samples 3 -> 4\)"):
        assert gate(tmp_path, _certify_policy(tmp_path, "0.01", 4, stored, vs))[0] == 0


def test_a_summary_file_that_cannot_be_written_keeps_the_gates_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "missing" / "summary.md"))
    with pytest.warns(UserWarning, match="cannot append to .GITHUB_STEP_SUMMARY"):
        code, _ = gate(tmp_path, policy_file(tmp_path, "model: MNIST\nchecks:\n  - name: f\n    facts: {}\n"
                                                        "    require: {parity: true}\n"))
    assert code == 0
