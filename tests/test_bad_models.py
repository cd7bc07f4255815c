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
    assert message.startswith(f"certprune: error: {path}: ")  # which file: a gate reads a baseline model too


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


def _verify_error(capsys, path, tmp_path) -> str:
    """``certprune verify`` with a VNN-LIB box on the 4-input, 3-output model: one line, exit 2."""
    lines = [f"(declare-const X_{i} Real)" for i in range(4)] + [f"(declare-const Y_{j} Real)" for j in range(3)]
    lines += [f"(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))" for i in range(4)] + ["(assert (<= Y_0 -100))"]
    (tmp_path / "p.vnnlib").write_text("\n".join(lines) + "\n")
    code = main(["verify", str(path), "--property", str(tmp_path / "p.vnnlib"), "--timeout", "10"])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    return captured.err.strip()


def test_a_file_onnxruntime_cannot_run_is_never_proven(tmp_path, capsys):
    """A file that still parses (here: no opset import, as a truncated file's tail can lose it) holds weights
    the numpy fast path could prove the property on; what onnxruntime cannot run is refused, not verified."""
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])]
    path = _save(tmp_path, nodes, [_x()], _weights())
    model = onnx.load(str(path))
    del model.opset_import[:]
    onnx.save(model, str(path))
    assert "onnxruntime cannot load" in _verify_error(capsys, path, tmp_path)


def test_a_float64_model_is_named(tmp_path, capsys):
    """Float32 bounds and replays are about the float32 model; a DOUBLE one is another model: named, exit 2."""
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(np.ones((3, 4)), "W"), numpy_helper.from_array(np.zeros(3), "b")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 3])], inits)
    path = tmp_path / "double.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match="DOUBLE"):
        load_onnx(path)
    assert "tensor of DOUBLE" in _cli_error(capsys, path)
    assert "tensor of DOUBLE" in _verify_error(capsys, path, tmp_path)


def test_a_sigmoid_inside_the_network_is_named_not_the_layer_after_it(tmp_path, capsys):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc1", transB=1),
             helper.make_node("Sigmoid", ["h"], ["s"], name="squash"),
             helper.make_node("Gemm", ["s", "W2", "b"], ["y"], name="fc2", transB=1)]
    path = _save(tmp_path, nodes, [_x()], _weights() + [numpy_helper.from_array(np.ones((3, 3), np.float32), "W2")])
    message = _cli_error(capsys, path)
    assert "Sigmoid (node 'squash' at position 1) is supported only as the model's last operation" in message
    assert "Gemm (node 'fc2' at position 2) reads its output" in message
