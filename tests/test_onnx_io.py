"""ONNX reader and writer: parity with onnxruntime for torch exports, ACAS Xu and shipped models."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from certprune import UnsupportedLayerError, from_torch, load_onnx, save_onnx
from certprune.parity import check_parity
from tests.conftest import ACASXU, MODELS


class Normalise(nn.Module):
    """(x - mean) / std inside the model, as MNIST models often do: exported as Sub and Div."""

    def forward(self, x):
        return (x - 0.1307) / 0.3081


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(Normalise(), nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 16),
                         nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10)).eval()


def _cnn() -> nn.Sequential:
    torch.manual_seed(1)
    model = nn.Sequential(Normalise(), nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 6, 4, stride=2), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 6 * 6, 20), nn.ReLU(), nn.Linear(20, 10), nn.Softmax(dim=-1)).eval()
    for bn in (model[2], model[5]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
    return model


def _export(model: nn.Module, path, dynamo: bool, opset: int) -> None:
    x = torch.rand(2, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=opset, input_names=["input"],
                              output_names=["output"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                              verbose=False)
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


UNIT = (np.zeros((1, 28, 28)), np.ones((1, 28, 28)))


@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize("dynamo,opset", [(False, 11), (False, 17), (True, 18)])
def test_torch_exports_match_onnxruntime(tmp_path, make, dynamo, opset):
    path = tmp_path / "model.onnx"
    model = make()
    _export(model, path, dynamo, opset)
    network = load_onnx(path)
    report = check_parity(network, path, samples=32, bounds=UNIT)
    assert report.ok, report
    assert all(layer.kind != "affine" or make is _cnn for layer in network.layers)  # MLP folds everything


@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_from_torch_matches_module(make):
    model = make()[1:]  # without the custom normalisation module, which from_torch cannot know
    network = from_torch(model, (1, 28, 28))
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        ours = network(x)
        if network.output_transform == "softmax":
            ours = torch.softmax(ours, dim=-1)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_from_torch_names_an_unknown_module():
    with pytest.raises(UnsupportedLayerError, match="module '0' of type Normalise"):
        from_torch(_mlp(), (1, 28, 28))


def test_round_trip_keeps_outputs(tmp_path):
    source = tmp_path / "source.onnx"
    _export(_cnn(), source, dynamo=False, opset=17)
    network = load_onnx(source)
    written = tmp_path / "written.onnx"
    save_onnx(network, written)
    again = load_onnx(written)
    assert [layer.kind for layer in again.layers] == [layer.kind for layer in network.layers]
    assert again.output_transform == "softmax"
    assert check_parity(again, written, bounds=UNIT).ok
    assert check_parity(network, written, bounds=UNIT).ok
    x = torch.rand(8, 1, 28, 28)
    assert torch.allclose(again(x), network(x), atol=1e-6)


def test_written_model_has_dynamic_batch(tmp_path):
    network = load_onnx(ACASXU / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx")
    path = tmp_path / "acas.onnx"
    save_onnx(network, path)
    from certprune.runtime import OnnxRuntimeModel

    runtime = OnnxRuntimeModel(path)
    assert runtime.fixed_batch is None
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (7, 1, 1, 5)).astype(np.float32)
    assert np.allclose(runtime(x), network(torch.from_numpy(x)).detach().numpy(), atol=1e-6)


@pytest.mark.parametrize("index", range(1, 10))
def test_acasxu_networks_match_onnxruntime(acasxu_dir, index):
    path = acasxu_dir / "onnx" / f"ACASXU_run2a_1_{index}_batch_2000.onnx"
    network = load_onnx(path)
    assert network.relu_count == 300
    bounds = (np.full(network.input_shape, -0.5), np.full(network.input_shape, 0.5))
    assert check_parity(network, path, samples=100, bounds=bounds).ok


def _shipped_models():
    return sorted(MODELS.glob("*.onnx")) if MODELS.is_dir() else []


@pytest.mark.parametrize("path", _shipped_models(), ids=lambda p: p.stem)
def test_shipped_models_match_onnxruntime(path):
    network = load_onnx(path)
    assert check_parity(network, path, samples=64).ok


def test_from_torch_refuses_a_module_whose_forward_is_not_its_layers():
    class Doubled(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    module = Doubled(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with pytest.raises(UnsupportedLayerError, match="differs from the module"):
        from_torch(module, (3,))
    assert not module.training and from_torch(module, (3,), check=False).input_shape == (3,)


def test_a_model_with_a_fixed_batch_of_four_runs_any_number_of_rows(tmp_path):
    """torch.onnx.export without dynamic axes fixes the example's batch (e.g. 32); onnxruntime then refuses
    any other batch, which crashed inspect, certify and verify. Rows are run in padded batches of four."""
    import numpy as np
    import onnx

    from certprune.onnx_io import save_onnx
    from certprune.runtime import OnnxRuntimeModel
    from tests.netgen import random_network

    network = random_network(2, 6, (5,), seed=3)
    save_onnx(network, tmp_path / "free.onnx")
    model = onnx.load(tmp_path / "free.onnx")
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(model, tmp_path / "fixed.onnx")
    free, fixed = OnnxRuntimeModel(tmp_path / "free.onnx"), OnnxRuntimeModel(tmp_path / "fixed.onnx")
    assert fixed.fixed_batch == 4
    x = np.random.default_rng(0).normal(size=(9, 5)).astype(np.float32)
    for rows in (1, 3, 4, 9):
        assert np.array_equal(fixed(x[:rows]), free(x[:rows]))
