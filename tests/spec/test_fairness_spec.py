"""Fairness property files: the shipped ones parse, and every bad file gets a message naming key and line."""
from __future__ import annotations

from pathlib import Path

import pytest

from certprune.errors import PropertyError
from certprune.fairness.partition import Partitioning
from certprune.spec.fairness import load_fairness_property, parse_fairness

REPO = Path(__file__).resolve().parents[2]
GOOD = """\
kind: fairness
decision: {output: 0, threshold: 0.5}
attributes:
  - {name: age, type: int, range: [10, 100]}
  - {name: income, type: real, range: [0.0, 5.0]}
  - {name: race, type: int, range: [0, 4]}
  - {name: sex, type: int, range: [0, 1]}
protected: [sex, {race: [2, 4]}]
relaxed: {age: 2}
partition: {max_values: 10}
timeout: {partition: 5, total: 60}
engine: z3
"""


def parse(text: str):
    return parse_fairness(text, "fair.yaml")


def test_good_file_parses():
    prop = parse(GOOD)
    assert prop.names == ("age", "income", "race", "sex")
    assert prop.protected == {"race": (2.0, 4.0), "sex": (0.0, 1.0)}  # input order
    assert prop.relaxed == {"age": 2.0}
    assert prop.decision.threshold == 0.5 and prop.decision.output == 0
    assert (prop.timeout_partition, prop.timeout_total, prop.engine) == (5.0, 60.0, "z3")
    assert not prop.attributes[1].integer
    assert len(prop.sha256) == 64
    parts = Partitioning(prop)
    assert len(parts) == 10  # age: 91 values in chunks of 10; reals and protected are not cut
    assert parts[0].lower[0] == 10 and parts[0].upper[0] == 19 and parts[9].upper[0] == 100


@pytest.mark.parametrize("name,count", [("german_fairness", 201), ("german_fairness_sex", 201),
                                        ("adult_fairness", 16000), ("bank_fairness", 510)])
def test_shipped_properties(name, count):
    prop = load_fairness_property(REPO / "properties" / f"{name}.yaml")
    assert len(Partitioning(prop)) == count  # as Fairify's partitioning of the same domains


BAD = [
    (GOOD.replace("protected:", "protcted:"), "fair.yaml line 8: unknown key 'protcted' (did you mean 'protected'?)"),
    (GOOD.replace("range: [10, 100]", "range: [100, 10]"),
     "fair.yaml line 4: range of 'age' must be [lo, hi] with lo <= hi, got [100, 10]"),
    (GOOD.replace("range: [10, 100]", "range: [10]"), "fair.yaml line 4: range of 'age' must be [lo, hi]"),
    (GOOD.replace("type: int, range: [0, 4]", "type: integer, range: [0, 4]"),
     "fair.yaml line 6: type of 'race' must be one of int, real, got 'integer'"),
    (GOOD.replace("{race: [2, 4]}", "{race: [2, 7]}"), "fair.yaml line 8: value 7 of 'race' lies outside"),
    (GOOD.replace("[sex, {", "[sexx, {"), "fair.yaml line 8: protected attribute 'sexx' is not one of the "
                                          "attributes (did you mean 'sex'?)"),
    (GOOD.replace("relaxed: {age: 2}", "relaxed: {sex: 1}"), "fair.yaml line 9: 'sex' is protected"),
    (GOOD.replace("relaxed: {age: 2}", "relaxed: {age: -1}"), "fair.yaml line 9: tolerance of 'age' must be >= 0"),
    (GOOD.replace("relaxed: {age: 2}", "relaxed: {age: 1.5}"), "fair.yaml line 9: tolerance of 'age' must be an "
                                                               "integer"),
    (GOOD.replace("{max_values: 10}", "{max_value: 10}"), "fair.yaml line 10: unknown key 'max_value' (did you "
                                                          "mean 'max_values'?)"),
    (GOOD.replace("{max_values: 10}", "{ranges: {age: [[10, 40], [42, 100]]}}"),
     "fair.yaml line 10: ranges of 'age' must cover [10, 100] without gaps or overlaps (gap before 42)"),
    (GOOD.replace("{max_values: 10}", "{ranges: {age: [[10, 40], [41, 99]]}}"), "they end at 99"),
    (GOOD.replace("engine: z3", "engine: fast"), "fair.yaml line 12: engine must be one of auto, z3"),
    (GOOD.replace("partition: 5", "partition: 0"), "fair.yaml line 11: timeout partition must be > 0"),
    (GOOD.replace("decision: {output: 0, threshold: 0.5}", "decision: maximum"),
     "fair.yaml line 2: decision must be 'argmax'"),
    (GOOD.replace("  - {name: sex", "  - {nam: sex"), "fair.yaml line 7: unknown key 'nam' (did you mean 'name'?)"),
    (GOOD.replace("kind: fairness\n", ""), "fair.yaml line 1: missing required key 'kind'"),
    (GOOD.replace("{name: income", "{name: age"), "fair.yaml line 5: attribute 'age' appears twice"),
    (GOOD + "engine: auto\n", "fair.yaml line 13: key 'engine' appears twice"),
    (GOOD.replace("protected: [sex, {race: [2, 4]}]", "protected: {race: [2]}"),
     "fair.yaml line 8: protected attribute 'race' needs at least two values"),
    (GOOD.replace("[0, 4]}", "[0, 4]"), "fair.yaml line 7: invalid YAML"),
    ("", "fair.yaml: the file is empty"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_files_name_key_and_line(text, message):
    with pytest.raises(PropertyError) as info:
        parse(text)
    assert message in str(info.value)


def test_model_mismatch_names_the_attributes_line():
    prop = parse(GOOD)
    with pytest.raises(PropertyError, match=r"fair.yaml line 3: 'attributes' lists 4 attributes but the model "
                                            r"takes 5 inputs"):
        prop.check_model(5, 1)
    with pytest.raises(PropertyError, match=r"line 2: decision output 0 is not an output"):
        prop.check_model(4, 0)
    argmax = parse(GOOD.replace("decision: {output: 0, threshold: 0.5}", "decision: argmax"))
    with pytest.raises(PropertyError, match=r"line 2: decision 'argmax' needs a model with several outputs"):
        argmax.check_model(4, 1)
    with pytest.raises(PropertyError, match="ends in a softmax"):
        prop.check_model(4, 3, "softmax")
    prop.check_model(4, 1, "sigmoid")


def test_a_threshold_on_one_output_of_a_multi_output_model_is_warned_about():
    """fairness-template writes a one-logit decision; on a 2-logit classifier it judged logit 0 > 0, not the
    model's argmax, silently."""
    prop = parse(GOOD)
    with pytest.warns(UserWarning, match=r"line 2: the decision reads output 0 alone .* of a model with 2 outputs"):
        prop.check_model(4, 2)
    argmax = parse(GOOD.replace("decision: {output: 0, threshold: 0.5}", "decision: argmax"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        argmax.check_model(4, 2)
        prop.check_model(4, 1)


def test_missing_file(tmp_path):
    with pytest.raises(PropertyError, match="cannot read property file"):
        load_fairness_property(tmp_path / "nope.yaml")
