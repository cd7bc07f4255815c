"""The data loaders' contracts, and that every shipped model still scores what its card says."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from certprune import data
from certprune.errors import CertpruneError

MODELS = Path(__file__).resolve().parents[1] / "models"
ROWS = {"german": 1000, "adult": 45222, "bank": 3090}


# ---------------------------------------------------------------------------------------------- MNIST

@pytest.mark.parametrize("split, size", [("train", 4000), ("test", 1000), ("all", 5000)])
def test_mnist_split_shapes_and_ranges(split, size):
    x, y = data.load_mnist(split)
    assert x.shape == (size, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (size,) and y.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == [size // 10] * 10


def test_mnist_test_is_interleaved_and_disjoint_from_train():
    x_test, y_test = data.load_mnist("test")
    x_train, _ = data.load_mnist("train")
    assert y_test[:20].tolist() == list(range(10)) * 2
    train_rows = {row.numpy().tobytes() for row in x_train.flatten(1)}
    assert not any(row.numpy().tobytes() in train_rows for row in x_test.flatten(1))


def test_the_data_ships_inside_the_package(monkeypatch, tmp_path):
    """No extra and no data beside the clone: MNIST and the tables come with certprune; a broken install says so."""
    assert data.mnist_path().parent == data.PACKAGE_DATA
    assert all(data.tabular_path(name).parent == data.PACKAGE_DATA for name in ROWS)
    monkeypatch.setattr(data, "PACKAGE_DATA", tmp_path)
    with pytest.raises(CertpruneError, match="reinstall certprune"):
        data.load_mnist()


def test_mnist_unknown_split():
    with pytest.raises(CertpruneError, match="'valid'"):
        data.load_mnist("valid")


# -------------------------------------------------------------------------------------------- tabular

@pytest.mark.parametrize("name", sorted(ROWS))
def test_tabular_columns(name):
    table = data.load_tabular(name)
    assert table.label not in table.feature_names
    assert table.feature_names == tuple(data.DOMAINS[name])
    assert table.x.shape == (ROWS[name], len(table.feature_names)) and table.x.dtype == torch.float32
    assert set(table.y.unique().tolist()) == {0, 1} and table.y.dtype == torch.int64
    assert torch.equal(table.x, table.x.round())  # raw integers


def test_german_label_is_credit_and_sex_is_the_last_feature():
    table = data.load_tabular("german")
    assert table.label == "credit" and table.feature_names[-1] == "sex"
    assert float(table.y.float().mean()) == pytest.approx(0.7)  # 700 good, 300 bad


@pytest.mark.parametrize("name", sorted(ROWS))
def test_data_inside_verification_domain(name):
    table = data.load_tabular(name)
    lower, upper = (torch.tensor(b, dtype=torch.float32) for b in table.domain_bounds())
    outside = [table.feature_names[i] for i in range(len(lower))
               if bool((table.x[:, i] < lower[i]).any() or (table.x[:, i] > upper[i]).any())]
    # German `property` has 4 values (A121..A124) but the published domain is 0..2.
    assert outside == (["property"] if name == "german" else [])


def test_split_is_seeded_stratified_and_disjoint():
    table = data.load_tabular("bank")
    train, test = table.split(0.2, seed=3)
    again, _ = table.split(0.2, seed=3)
    other, _ = table.split(0.2, seed=4)
    assert torch.equal(train.x, again.x) and not torch.equal(train.x, other.x)
    assert len(train.y) + len(test.y) == len(table.y)
    assert float(test.y.float().mean()) == pytest.approx(float(table.y.float().mean()), abs=0.002)


def test_missing_table_names_the_path(tmp_path):
    with pytest.raises(CertpruneError, match=str(tmp_path / "german.csv")):
        data.load_tabular("german", tmp_path)


def test_data_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    with pytest.raises(CertpruneError, match=str(tmp_path / "tabular" / "adult.csv")):
        data.load_tabular("adult")


def test_unknown_table():
    with pytest.raises(CertpruneError, match="'credit'"):
        data.load_tabular("credit")


# ------------------------------------------------------------------------------------- shipped models

def _card(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def _test_split(card: dict) -> tuple[np.ndarray, np.ndarray]:
    if card["name"].startswith("mnist"):
        x, y = data.load_mnist("test")
    else:
        table = data.load_tabular(card["name"].split("_")[0])
        _, test = table.split(card["data"]["test_fraction"], card["data"]["split_seed"])
        x, y = test.x, test.y
    return x.numpy(), y.numpy()


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.onnx")), ids=lambda p: p.stem)
def test_shipped_model_matches_its_card(path):
    import onnx
    import onnxruntime as ort

    card = _card(path)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["certprune.model_card"] == path.with_suffix(".json").name
    assert "certprune.input_lower" in metadata and "certprune.input_upper" in metadata
    assert path.stat().st_size == card["file_bytes"] <= 2_000_000
    x, y = _test_split(card)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": x})[0]
    predicted = out.argmax(1) if out.shape[1] > 1 else (out[:, 0] >= 0).astype(np.int64)
    assert float((predicted == y).mean()) == pytest.approx(card["test_accuracy"], abs=0.005)


def test_every_model_has_a_card_and_a_readme_row():
    readme = (MODELS / "README.md").read_text()
    for path in MODELS.glob("*.onnx"):
        assert path.with_suffix(".json").is_file() and f"`{path.name}`" in readme
