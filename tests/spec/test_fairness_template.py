"""`fairness-template`: a valid property skeleton from a table, which then verifies on a matching model."""
from __future__ import annotations

import gzip

import pytest

from certprune.cli.main import main
from certprune.errors import CertpruneError
from certprune.spec.fairness import load_fairness_property as read_fairness
from certprune.spec.fairness_template import fairness_template
from tests.conftest import MODELS, REPO


def test_template_from_the_german_table_verifies_on_the_german_model(tmp_path):
    with gzip.open(REPO / "certprune" / "datasets" / "german.csv.gz", "rt") as f:
        (tmp_path / "german.csv").write_text("".join(f.readlines()[:60]))
    out = tmp_path / "p.yaml"
    assert main(["fairness-template", str(tmp_path / "german.csv"), "--protected", "sex", "--label", "credit",
                 "-o", str(out)]) == 0
    prop = read_fairness(out)
    assert prop.names[0] == "status" and prop.names[-1] == "sex" and "credit" not in prop.names
    assert list(prop.protected) == ["sex"]
    code = main(["verify", str(MODELS / "german_small.onnx"), "--property", str(out), "--limit", "3", "--quiet"])
    assert code in (0, 10, 20)


def test_real_columns_and_errors(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,sex,y\n0.5,1,0,1\n2.25,3,1,0\n")
    text = fairness_template(tmp_path / "t.csv", ("sex",))
    assert "{name: a, type: real, range: [0.5, 2.25]}" in text and "{name: b, type: int, range: [1, 3]}" in text
    with pytest.raises(CertpruneError, match="protected attribute 'race' is not a feature column"):
        fairness_template(tmp_path / "t.csv", ("race",))
    with pytest.raises(CertpruneError, match="no column 'approve' for the label"):  # a typo is not left out silently
        fairness_template(tmp_path / "t.csv", ("sex",), label="approve")
    (tmp_path / "s.csv").write_text("a,sex,y\nx,0,1\n")
    with pytest.raises(CertpruneError, match="column 'a' is not numeric"):
        fairness_template(tmp_path / "s.csv", ("sex",))


def test_a_table_without_a_label_column_warns_that_every_column_is_an_input(tmp_path):
    path = tmp_path / "loans.csv"
    path.write_text("age,sex,approved\n30,0,1\n40,1,0\n")
    with pytest.warns(UserWarning, match="no label column .*name the label with --label"):
        text = fairness_template(path, ("sex",))
    assert "approved" in text  # taken as an input, as the warning says


def test_with_the_model_the_template_checks_its_inputs_and_takes_argmax_for_several_outputs(tmp_path, capsys):
    import warnings

    import certprune
    import torch
    from torch import nn

    (tmp_path / "loans.csv").write_text("age,income,sex,approved\n30,2.5,0,1\n40,1.25,1,0\n")
    for outputs, decision in ((2, "argmax"), (1, "threshold")):
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, outputs))
        certprune.save_onnx(certprune.from_torch(module.eval(), (3,)), tmp_path / "m.onnx")
        out = tmp_path / f"p{outputs}.yaml"
        assert main(["fairness-template", str(tmp_path / "loans.csv"), "--protected", "sex", "--label", "approved",
                     "--model", str(tmp_path / "m.onnx"), "-o", str(out)]) == 0
        assert read_fairness(out).decision.mode == decision
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(["verify", str(tmp_path / "m.onnx"), "--property", str(out), "--limit", "2",
                         "--quiet"]) in (0, 10, 20)
        assert not [w for w in seen if "reads output" in str(w.message)]  # the decision fits the model
    # the label not named: 'approved' would be a fourth input of a three-input model
    assert main(["fairness-template", str(tmp_path / "loans.csv"), "--protected", "sex", "--model",
                 str(tmp_path / "m.onnx"), "-o", str(tmp_path / "x.yaml")]) == 2
    assert "4 feature columns" in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()


def test_protected_attributes_are_checked_before_the_template_and_a_sidecar_gives_the_domains(tmp_path):
    """A real-valued or repeated protected attribute was refused citing 'template for t.csv line 12', a line of
    a file never written; the table's .domain.json sidecar was ignored for the data's own min and max."""
    import json

    (tmp_path / "t.csv").write_text("age,income,sex,y\n30,1.5,1,1\n40,2.25,0,0\n")
    with pytest.raises(CertpruneError, match="protected attribute 'income' holds real values") as caught:
        fairness_template(tmp_path / "t.csv", ("income",))
    assert "line" not in str(caught.value)
    with pytest.raises(CertpruneError, match="--protected: 'sex' is given twice"):
        fairness_template(tmp_path / "t.csv", ("sex", "sex"))
    (tmp_path / "t.domain.json").write_text(json.dumps({"age": [18, 99.5], "income": [0, 10], "sex": [0, 1]}))
    text = fairness_template(tmp_path / "t.csv", ("sex",))
    assert "{name: age, type: int, range: [18, 99]}" in text
    assert "{name: income, type: real, range: [0.0, 10.0]}" in text
    assert "Domains are those of t.domain.json" in text
