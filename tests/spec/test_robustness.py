"""Robustness YAML files: samples from a data set, inline or a file; the VNN-LIB form; errors with lines."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from certprune.errors import PropertyError
from certprune.spec.robustness import instances, parse_robustness, read_robustness, robustness_property

HEAD = "kind: robustness\ninput_range: [0.0, 1.0]\neps: 0.1\n"
POINTS = "points:\n  - {x: [0.05, 0.5, 0.95], label: 2}\n  - x: [0.3, 0.3, 0.3]\n    label: 0\n"


def parse(text: str, **kw):
    return parse_robustness(textwrap.dedent(text), "robust.yaml", **kw)


def fake_mnist(split: str):
    x = np.linspace(0, 1, 20 * 4, dtype=np.float32).reshape(20, 1, 2, 2)
    return x, np.arange(20) % 3 if split == "test" else np.zeros(20, dtype=int)


def test_inline_points_become_clipped_boxes():
    spec = parse(HEAD + "timeout: 2.5\n" + POINTS)
    assert spec.timeout == 2.5 and spec.eps == 0.1 and spec.input_range == (0.0, 1.0)
    first, second = instances(spec, (3,), n_classes=3)
    np.testing.assert_allclose(first.lower, [0.0, 0.4, 0.85])
    np.testing.assert_allclose(first.upper, [0.15, 0.6, 1.0])
    assert (first.index, first.label, second.index, second.label) == (0, 2, 1, 0)
    assert first.timeout == 2.5


def test_property_is_label_stays_argmax():
    prop = robustness_property(np.zeros(3), np.ones(3), label=1, n_classes=4)
    (d,) = prop.disjuncts
    assert prop.n_inputs == 3 and prop.n_outputs == 4 and len(d.constraints) == 3

    def violated(y):
        return any(np.all(A @ y <= b) for A, b in d.constraints)

    assert not violated(np.array([0.0, 1.0, 0.5, -2.0]))  # label 1 strictly largest
    assert violated(np.array([0.0, 1.0, 1.0, -2.0]))  # a tie counts as a counterexample
    assert violated(np.array([0.0, 1.0, 0.5, 3.0]))
    with pytest.raises(PropertyError, match="label 4 is not a class of a model with 4 outputs"):
        robustness_property(np.zeros(3), np.ones(3), label=4, n_classes=4)


def test_instance_property_flattens_the_box():
    spec = parse(HEAD + "data: mnist\nrange: [2, 5]\n")
    found = instances(spec, (1, 2, 2), 3, loaders={"mnist": fake_mnist})
    assert [i.index for i in found] == [2, 3, 4] and [i.label for i in found] == [2, 0, 1]
    assert found[0].x.shape == (1, 2, 2)
    prop = found[0].property(3, "robust.yaml")
    assert prop.disjuncts[0].lower.shape == (4,) and prop.source == "robust.yaml sample 2"


def test_data_indices_and_split():
    spec = parse(HEAD + "data: mnist\nsplit: train\nindices: [7, 1]\n")
    found = instances(spec, (4,), 3, loaders={"mnist": fake_mnist})
    assert [i.index for i in found] == [7, 1] and [i.label for i in found] == [0, 0]


def test_index_beyond_the_data_set():
    spec = parse(HEAD + "data: mnist\nindices: [1, 25]\n")
    with pytest.raises(PropertyError, match="robust.yaml line 5: index 25 is beyond the 20 samples"):
        instances(spec, (4,), 3, loaders={"mnist": fake_mnist})


def test_npz_file_relative_to_the_yaml(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.full((4, 2), 0.5), y=np.array([0, 1, 0, 1]))
    (tmp_path / "r.yaml").write_text(HEAD + "file: s.npz\nindices: [3]\n")
    (only,) = instances(read_robustness(tmp_path / "r.yaml"), (2,), 2)
    assert only.index == 3 and only.label == 1
    (tmp_path / "all.yaml").write_text(HEAD + "file: s.npz\n")
    assert len(instances(read_robustness(tmp_path / "all.yaml"), (2,), 2)) == 4


def test_a_csv_file_as_every_command_reads_it(tmp_path):
    """A CSV table (label column y) works like the .npz: 'file: mine.csv' was read as a pickled array."""
    (tmp_path / "t.csv").write_text("a,b,y\n0.5,0.25,1\n0.125,0.75,0\n")
    (tmp_path / "r.yaml").write_text(HEAD + "file: t.csv\nindices: [1]\n")
    (only,) = instances(read_robustness(tmp_path / "r.yaml"), (2,), 2)
    assert only.label == 0 and np.allclose(only.x, [0.125, 0.75])
    (tmp_path / "bad.yaml").write_text(HEAD + "file: missing.csv\n")
    with pytest.raises(PropertyError, match="bad.yaml line 4: data file not found"):
        read_robustness(tmp_path / "bad.yaml")


def test_real_mnist_loader():
    spec = parse("kind: robustness\ninput_range: [0, 1]\neps: 0.01\ndata: mnist\nrange: [0, 3]\n")
    found = instances(spec, (1, 28, 28), 10)
    assert [i.label for i in found] == [0, 1, 2]
    assert all(np.all(i.lower >= 0) and np.all(i.upper <= 1) for i in found)


# ---- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("kind: robustness\ninput_range: [0, 1]\nepss: 0.1\n", r"^robust.yaml line 3: unknown key 'epss' \(did you mean 'eps'\?\)$"),
    (HEAD + "timeout: 0\n" + POINTS, r"^robust.yaml line 4: timeout must be > 0, got 0$"),
    (HEAD + "timeout: fast\n" + POINTS, "line 4: timeout must be a number, got 'fast'"),
    ("kind: robustness\ninput_range: [0, 1]\neps: -0.1\n" + POINTS, "line 3: eps must be >= 0, got -0.1"),
    ("kind: robustness\ninput_range: [0, 1]\neps: true\n" + POINTS, "line 3: eps must be a number, got True"),
    ("kind: fairness\ninput_range: [0, 1]\neps: 0.1\n" + POINTS, "line 1: kind must be 'robustness', got 'fairness'"),
    ("kind: robustness\ninput_range: [1, 0]\neps: 0.1\n" + POINTS, r"line 2: input_range must have lo < hi"),
    ("kind: robustness\ninput_range: 1\neps: 0.1\n" + POINTS, r"line 2: input_range must be a list of 2 numbers"),
    ("kind: robustness\neps: 0.1\n" + POINTS, "missing required key 'input_range'"),
    (HEAD, "exactly one of data, points, file \\(got none\\)"),
    (HEAD + "data: mnist\n" + POINTS, "exactly one of data, points, file \\(got data, points\\)"),
    (HEAD + "data: cifar\nrange: [0, 2]\n", r"line 4: unknown data set 'cifar' \(known: mnist\)"),
    (HEAD + "data: mnist\nsplit: val\nrange: [0, 2]\n", "line 5: split must be one of train, test"),
    (HEAD + "data: mnist\n", "line 4: 'data' needs 'indices' or 'range'"),
    (HEAD + "data: mnist\nrange: [0, 2]\nindices: [1]\n", "line 6: give either 'indices' or 'range', not both"),
    (HEAD + "data: mnist\nrange: [3, 2]\n", r"line 5: range must be \[start, stop\] with 0 <= start < stop"),
    (HEAD + "data: mnist\nindices: [1, -2]\n", "line 5: indices must be a non-empty list of integers >= 0"),
    (HEAD + "data: mnist\nindices: [1.5]\n", "line 5: indices must be an integer, got 1.5"),
    (HEAD + "split: test\n" + POINTS, "line 4: 'split' only applies to 'data'"),
    (HEAD + POINTS + "range: [0, 1]\n", "line 8: 'range' does not apply to inline 'points'"),
    (HEAD + "points:\n  - {x: [0.1], label: 0}\n  - {x: [0.1, 0.2], label: 0}\n", r"line 6: x has shape \(2,\)"),
    (HEAD + "points:\n  - {x: [0.1], label: one}\n", "line 5: label must be an integer, got 'one'"),
    (HEAD + "points:\n  - {x: [a], label: 1}\n", "line 5: x must be a non-empty"),
    (HEAD + "points:\n  - {x: [0.1]}\n", "line 5: each point must be a mapping with exactly the keys x and label"),
    (HEAD + "eps: 0.2\n" + POINTS, "line 4: key 'eps' appears twice"),
    (HEAD + "points: [\n", "robust.yaml line \\d+: invalid YAML"),
    ("", "the file is empty"),
    ("- 1\n- 2\n", "line 1: the file must be a mapping with keys kind, input_range"),
])
def test_errors_name_key_and_line(text, message):
    with pytest.raises(PropertyError, match=message):
        parse(text)


def test_file_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    np.savez(tmp_path / "b.npz", images=np.zeros(3))
    np.savez(tmp_path / "nan.npz", x=np.array([[0.5], [np.nan]]), y=np.array([0, 1]))
    np.savez(tmp_path / "frac.npz", x=np.array([[0.5], [0.25]]), y=np.array([0, 1.7]))
    for name, message in (("missing.npz", "line 4: data file not found: .*missing.npz"),
                          ("a.npy", "line 4: .*a.npy: data files are .npz, .csv or .parquet"),
                          ("b.npz", "has images"),
                          ("nan.npz", "line 4: .*sample 1 has NaN or Inf inputs"),  # was counted misclassified
                          ("frac.npz", r"line 4: .*labels must be class indices .*1\.7")):  # was cut to 1
        with pytest.raises(PropertyError, match=message):
            parse(HEAD + f"file: {name}\n", base=tmp_path)


def test_errors_against_the_model():
    spec = parse(HEAD + POINTS)
    with pytest.raises(PropertyError, match=r"line 5: samples have 3 values, the model input \(1, 28, 28\) has 784"):
        instances(spec, (1, 28, 28), 3)
    with pytest.raises(PropertyError, match="line 5: sample 0 has label 2, but the model has 2 outputs"):
        instances(spec, (3,), 2)
    outside = parse(HEAD + "points:\n  - {x: [1.5], label: 0}\n")
    with pytest.raises(PropertyError, match=r"line 5: sample 0 lies outside input_range \[0.0, 1.0\]"):
        instances(outside, (1,), 2)
    not_a_number = parse(HEAD + "points:\n  - {x: [.nan, 0.5], label: 0}\n")  # was a traceback in the search
    with pytest.raises(PropertyError, match="line 5: sample 0 has NaN or Inf inputs"):
        instances(not_a_number, (2,), 2)
    with pytest.raises(PropertyError, match=r"sample 0 has label 2, but the model has one output \(labels 0 and 1\)"):
        instances(parse(HEAD + "points:\n  - {x: [0.5], label: 2}\n"), (1,), 1)


def test_a_single_logit_model_takes_labels_0_and_1_as_certify_does():
    """Class 1 iff the logit is > 0: label 1 was refused ("the model has 1 outputs")."""
    spec = parse(HEAD + "points:\n  - {x: [0.5], label: 1}\n  - {x: [0.2], label: 0}\n")
    assert [i.label for i in instances(spec, (1,), 1)] == [1, 0]


@pytest.mark.parametrize("label, counterexample_row", [(1, 1.0), (0, -1.0)])
def test_single_logit_decision_is_logit_above_zero(label, counterexample_row):
    prop = robustness_property(np.zeros(3), np.ones(3), label, 1)
    (A, b), = prop.disjuncts[0].constraints
    assert A.tolist() == [[counterexample_row]] and b.tolist() == [0.0]


def test_single_logit_label_must_be_a_decision():
    with pytest.raises(PropertyError, match="not 0 or 1"):
        robustness_property(np.zeros(3), np.ones(3), 2, 1)


def test_yaml_1_2_floats_are_numbers():
    """PyYAML reads YAML 1.1, where eps: 1e-1 is the string '1e-1'; a user means the number."""
    from certprune.spec.yamlfile import YamlReader

    reader = YamlReader("p.yaml")
    values = reader.value(reader.compose("a: 1e-1\nb: 1.5e3\nc: .5e-2\nd: .e5\ne: 2\n"))
    assert values == {"a": 0.1, "b": 1500.0, "c": 0.005, "d": ".e5", "e": 2}
