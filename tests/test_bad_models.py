"""Bad model files: one readable line naming the problem, exit code 2, no traceback."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from certprune import load_onnx
from certprune.cli.main import main
from certprune.errors import ModelError, UnsupportedLayerError


def _save(tmp_path, nodes, inputs, inits, name="bad.onnx", opset=17):
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph(nodes, "g", inputs, [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _x(n=4):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])


def _weights(w=None):
    w = np.ones((3, 4), np.float32) if w is None else w
    return [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(3, np.float32), "b")]


def _cli_error(capsys, path) -> str:
    code = main(["inspect", str(path)])
    captured = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    return lines[0]


def test_unsupported_operator_names_op_node_and_position(tmp_path, capsys):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc1", transB=1),
             helper.make_node("Tanh", ["h"], ["y"], name="squash")]
    path = _save(tmp_path, nodes, [_x()], _weights())
    with pytest.raises(UnsupportedLayerError, match=r"Tanh.*'squash'.*position 1"):
        load_onnx(path)
    message = _cli_error(capsys, path)
    assert "unsupported operator Tanh (node 'squash' at position 1)" in message and "supported on activations:" in message


def test_truncated_file(tmp_path, capsys):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc1", transB=1)]
    good = _save(tmp_path, nodes, [_x()], _weights(np.random.rand(3, 4).astype(np.float32)))
    data = good.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated" in _cli_error(capsys, cut)


def test_not_an_onnx_file(tmp_path, capsys):
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a model\n" * 10)
    assert "is not a readable ONNX model" in _cli_error(capsys, path)


def test_missing_file(tmp_path, capsys):
    assert "model file not found" in _cli_error(capsys, tmp_path / "nothing.onnx")


def test_two_inputs(tmp_path, capsys):
    nodes = [helper.make_node("Add", ["x", "z"], ["s"], name="add"),
             helper.make_node("Gemm", ["s", "W", "b"], ["y"], name="fc1", transB=1)]
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])
    path = _save(tmp_path, nodes, [_x(), z], _weights())
    assert "model has 2 inputs ('x', 'z'); certprune supports exactly one" in _cli_error(capsys, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights(tmp_path, capsys, bad):
    w = np.ones((3, 4), np.float32)
    w[1, 2] = bad
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc1", transB=1)]
    path = _save(tmp_path, nodes, [_x()], _weights(w))
    message = _cli_error(capsys, path)
    assert "initializer 'W' contains" in message and ("NaN" in message or "Inf" in message)


def test_product_of_two_activations_is_named(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act"),
             helper.make_node("Mul", ["x", "r"], ["s"], name="gate"),
             helper.make_node("Gemm", ["s", "W", "b"], ["y"], name="fc1", transB=1)]
    path = _save(tmp_path, nodes, [_x()], _weights())
    with pytest.raises(UnsupportedLayerError, match="Mul of two activations.*'gate'"):
        load_onnx(path)


def test_shape_mismatch_is_a_model_error(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc1", transB=1)]
    path = _save(tmp_path, nodes, [_x(5)], _weights())
    with pytest.raises(ModelError, match="dense layer with 4 inputs"):
        load_onnx(path)


def test_join_of_different_shapes_is_named(tmp_path):
    w2 = [numpy_helper.from_array(np.ones((2, 4), np.float32), "W2"), numpy_helper.from_array(np.zeros(2, np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "W2", "b2"], ["h"], name="narrow", transB=1),
             helper.make_node("Add", ["x", "h"], ["s"], name="skip"),
             helper.make_node("Gemm", ["s", "W", "b"], ["y"], name="fc1", transB=1)]
    path = _save(tmp_path, nodes, [_x()], _weights() + w2)
    with pytest.raises(UnsupportedLayerError, match="Add of activations of shapes \\(4,\\) and \\(2,\\).*'skip'"):
        load_onnx(path)


def test_concat_along_the_batch_is_named(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act"),
             helper.make_node("Concat", ["x", "r"], ["c"], name="stack", axis=0),
             helper.make_node("Gemm", ["c", "W", "b"], ["y"], name="fc1", transB=1)]
    path = _save(tmp_path, nodes, [_x()], _weights())
    with pytest.raises(UnsupportedLayerError, match="Concat along the batch dimension.*'stack'"):
        load_onnx(path)
