"""The user's data files: .npz and .csv read into inputs, labels and a domain; every mistake is one line."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from certprune.datafile import read_data
from certprune.errors import CertpruneError


def test_npz_with_domain_and_splits(tmp_path):
    x = np.arange(12, dtype=float).reshape(6, 2)
    np.savez(tmp_path / "d.npz", x=x, y=[0, 1, 0, 1, 0, 1], lower=0.0, upper=[20.0, 30.0])
    d = read_data(tmp_path / "d.npz", count=4)
    assert d.x.shape == (4, 2) and d.y.tolist() == [0, 1, 0, 1] and d.upper.tolist() == [20.0, 30.0]
    np.savez(tmp_path / "s.npz", x_train=x[:4], y_train=[0, 1, 0, 1], x_test=x[4:], y_test=[1, 0])
    with pytest.warns(UserWarning, match="min and max"):
        assert read_data(tmp_path / "s.npz").y.tolist() == [1, 0]  # test by default
    with pytest.warns(UserWarning):
        assert len(read_data(tmp_path / "s.npz", split="all")) == 6


def test_csv_with_label_features_split_and_sidecar(tmp_path):
    (tmp_path / "t.csv").write_text("age,income,target,split\n30,1.5,1,train\n40,2.5,0,test\n50,3.5,1,test\n")
    (tmp_path / "t.domain.json").write_text(json.dumps({"age": [18, 99], "income": [0, 10]}))
    d = read_data(tmp_path / "t.csv", features=("income", "age"))
    assert d.features == ("income", "age") and d.x.tolist() == [[2.5, 40.0], [3.5, 50.0]]
    assert d.y.tolist() == [0, 1] and d.lower.tolist() == [0, 18] and d.upper.tolist() == [10, 99]
    assert len(read_data(tmp_path / "t.csv", split="all")) == 3


def test_range_option_and_a_file_without_splits(tmp_path):
    (tmp_path / "p.csv").write_text("a,b,label\n0.1,0.2,0\n0.3,0.4,1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = read_data(tmp_path / "p.csv", value_range=(0.0, 1.0))
    assert d.lower.tolist() == [0.0, 0.0] and d.upper.tolist() == [1.0, 1.0]
    assert len(read_data(tmp_path / "p.csv", split="train", strict_split=False, value_range=(0, 1))) == 2


@pytest.mark.parametrize("name, body, message", [
    ("a.csv", "a,b,label\n1,2,0\n1,x,0\n", "column 'b' is not numeric (line 3: 'x'); encode it"),
    # the bad value in the train split, the test split's own values all numbers: still named by its line
    ("s.csv", "a,b,label,split\n1,x,0,train\n1,2,0,test\n", "column 'b' is not numeric (line 2: 'x')"),
    ("h.csv", "a,b,label\n", "h.csv: no samples"),
    ("a.csv", "a,b\n1,2\n", "no label column (named label, y, target); name it with --label"),
    ("a.csv", "a,nan_col,label\n1,,0\n", "a.csv line 2: no value in column 'nan_col'"),
    ("a.csv", "a,b,label\n1,2,0\n3,4\n", "a.csv line 3: no value in column 'label'"),
    ("a.csv", "a,b,label\n1,2,0\n3,4,1,9\n", "a.csv line 3: 4 fields, the header has 3"),  # was blamed on 'a'
    ("a.npz", b"PK\x03\x04 cut short", "not a readable .npz"),
    ("a.csv", "a,inf_col,label\n1,inf,0\n", "sample 0 has NaN or Inf"),
    ("a.csv", "a,b,a,label\n1,2,3,0\n", "column 'a' appears more than once in the header"),
    ("a.csv", "a,label\n1,-1\n", "label -1 is negative"),
    ("a.csv", "a,label,split\n1,0,train\n", "no samples"),
    ("a.txt", "1 2 3\n", "data files are .npz, .csv or .parquet"),
    ("a.npz", b"not a zip", "not a readable .npz"),
])
def test_mistakes_are_one_line(tmp_path, name, body, message):
    path = tmp_path / name
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(CertpruneError) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_data(path, value_range=(-5, 5) if "label\n1,-1" not in str(body) else None)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_range_on_the_command_line_replaces_the_files_own_domain_and_says_so(tmp_path):
    """--range was dropped without a word when the file had lower/upper or a sidecar: boxes left it."""
    np.savez(tmp_path / "d.npz", x=np.full((2, 2), 0.5), y=[0, 1], lower=0.0, upper=1.0)
    (tmp_path / "t.csv").write_text("a,b,label\n0.5,0.5,0\n")
    (tmp_path / "t.domain.json").write_text(json.dumps({"lower": 0, "upper": 1}))
    for name in ("d.npz", "t.csv"):
        with pytest.warns(UserWarning, match="--range 0.2 0.8 replaces the domain the file gives"):
            d = read_data(tmp_path / name, value_range=(0.2, 0.8), split="all")
        assert d.lower.tolist() == [0.2, 0.2] and d.upper.tolist() == [0.8, 0.8]


def test_rows_of_another_split_are_left_out_with_a_warning_naming_one(tmp_path):
    """A typo ('tset') or an empty split cell dropped the row without a word."""
    (tmp_path / "t.csv").write_text("a,b,label,split\n0.1,0.2,0,test\n0.3,0.4,1,tset\n0.5,0.6,1,\n0.7,0.8,0,test\n")
    with pytest.warns(UserWarning, match=r"2 row\(s\) have a split other than 'train' or 'test' \(e.g. 'tset' at "
                                         r"line 3\) and are left out; --split all takes every row"):
        assert len(read_data(tmp_path / "t.csv", value_range=(0, 1))) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_data(tmp_path / "t.csv", value_range=(0, 1), split="all")) == 4


def test_npz_arrays_that_cannot_be_used_are_one_line(tmp_path):
    """Each was a traceback: an object (ragged) array, no samples, a .npy saved under an .npz name."""
    ragged = np.empty(2, dtype=object)
    ragged[:] = [np.zeros(2), np.zeros(3)]
    np.savez(tmp_path / "o.npz", x=ragged, y=[0, 1])
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    np.save(tmp_path / "a.npy", np.zeros((2, 2)))
    (tmp_path / "a.npy").rename(tmp_path / "n.npz")
    for name, message in (("o.npz", "array x cannot be read"), ("e.npz", "e.npz: no samples"),
                          ("n.npz", "one array, as np.save writes")):
        with pytest.raises(CertpruneError, match=message) as caught:
            read_data(tmp_path / name)
        assert "\n" not in str(caught.value)


def test_npz_mistakes(tmp_path):
    np.savez(tmp_path / "m.npz", inputs=np.zeros((2, 2)), y=[0, 1])
    with pytest.raises(CertpruneError, match="needs arrays x and y"):
        read_data(tmp_path / "m.npz")
    np.savez(tmp_path / "n.npz", x=np.zeros((2, 2)), y=[0, 1, 1], lower=0, upper=1)
    with pytest.raises(CertpruneError, match="x has 2 samples and y 3"):
        read_data(tmp_path / "n.npz")
    np.savez(tmp_path / "o.npz", x=np.full((2, 2), 5.0), y=[0, 1], lower=0, upper=1)
    with pytest.raises(CertpruneError, match="outside the domain"):
        read_data(tmp_path / "o.npz")
    np.savez(tmp_path / "p.npz", x=np.zeros((2, 2)), y=[0, 1], lower=0, upper=1)
    with pytest.raises(CertpruneError, match="no 'train' split"):
        read_data(tmp_path / "p.npz", split="train")


def test_a_typo_in_the_domain_sidecar_is_named(tmp_path):
    (tmp_path / "t.csv").write_text("age,income,label\n20,1,0\n30,2,1\n")
    (tmp_path / "t.domain.json").write_text(json.dumps({"lower": 0, "uper": 100}))
    with pytest.raises(CertpruneError, match="unknown key 'uper' \\(did you mean 'upper'\\?\\)"):
        read_data(tmp_path / "t.csv")
    (tmp_path / "t.domain.json").write_text(json.dumps({"age": [18, 99], "incme": [0, 10]}))
    with pytest.raises(CertpruneError, match="unknown key 'incme' \\(did you mean 'income'\\?\\)"):
        read_data(tmp_path / "t.csv")


@pytest.mark.parametrize("sidecar, message", [
    ({"lower": "zero", "upper": 1}, "key 'lower' must be a number or a list of numbers, got 'zero'"),
    ({"lower": {"a": 1}, "upper": 1}, "key 'lower' must be a number"),
    ({"age": "a", "income": [0, 10]}, "key 'age' must be a number"),
    ({"age": [18], "income": [0, 10]}, "feature 'age' needs \\[lo, hi\\], two numbers"),
])
def test_wrong_values_in_the_domain_sidecar_are_named(tmp_path, sidecar, message):
    """They raised numpy's TypeError or ValueError, a traceback, from certify, prune and gate."""
    (tmp_path / "t.csv").write_text("age,income,label\n20,1,0\n30,2,1\n")
    (tmp_path / "t.domain.json").write_text(json.dumps(sidecar))
    with pytest.raises(CertpruneError, match=message):
        read_data(tmp_path / "t.csv")


def test_where_a_sample_leaves_the_domain_and_which_splits_there_are(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,label,split\n0.5,0.25,1,Test\n0.5,7,0,val\n")
    (tmp_path / "t.domain.json").write_text(json.dumps({"lower": 0, "upper": 1}))
    with pytest.raises(CertpruneError, match="no samples in split 'test'; the split column holds 'Test', 'val'"):
        read_data(tmp_path / "t.csv")
    with pytest.raises(CertpruneError, match=r"sample 1, input 1: 7 lies outside the domain \[0, 1\]"):
        read_data(tmp_path / "t.csv", split="all")


def test_a_semicolon_or_tab_separated_csv_is_named_as_such(tmp_path):
    from certprune.datafile import read_data

    for mark, word in ((";", "semicolons"), ("\t", "tabs")):
        path = tmp_path / "t.csv"
        path.write_text(mark.join(["a", "b", "y"]) + "\n" + mark.join(["1", "2", "0"]) + "\n")
        with pytest.raises(CertpruneError, match=f"looks separated by {word}"):
            read_data(path)


def test_columns_and_labels_that_cannot_mean_what_they_say_are_one_line(tmp_path):
    """Each ran on or failed elsewhere: the label chosen as a feature ('outside the domain'), a feature given
    twice (accepted), --label on an .npz (ignored), one-hot labels ('100 inputs but 300 labels')."""
    (tmp_path / "t.csv").write_text("a,b,y\n0.1,0.2,0\n0.3,0.4,1\n")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.eye(4)[:, :3], lower=0, upper=1)
    for path, options, message in (
            ("t.csv", {"features": ("a", "y")}, "column 'y' is the label; leave it out of the features"),
            ("t.csv", {"features": ("a", "b", "a")}, "feature 'a' is given twice"),
            ("d.npz", {"label": "y"}, "--label and --features pick columns of a .csv or .parquet table"),
            ("d.npz", {}, r"labels have shape \(4, 3\); they must be class indices")):
        with pytest.raises(CertpruneError, match=message):
            read_data(tmp_path / path, value_range=(0, 1), split="all", **options)
