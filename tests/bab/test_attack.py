"""The falsifier finds easy counterexamples, confirms them, replays them on ONNX, and finds none when none exist."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from certprune.bab.attack import find_counterexample, replay_on_onnx
from tests.netgen import random_network
from certprune.network import Conv2d, Dense, Flatten, Network, ReLU


def dense_net(sizes, seed):
    """A dense network with the hidden widths of ``sizes`` (all equal), from the shared generator."""
    return random_network(len(sizes) - 2, sizes[1], (sizes[0],), seed=seed, outputs=sizes[-1])


def write_onnx(network: Network, path, final: str | None = None):
    """The dense network as an ONNX graph of Gemm and Relu nodes (plus a final Softmax or Sigmoid)."""
    nodes, inits, name = [], [], "x"
    for i, layer in enumerate(network.layers):
        if isinstance(layer, Dense):
            inits += [numpy_helper.from_array(layer.weight.numpy(), f"W{i}"),
                      numpy_helper.from_array(layer.bias.numpy(), f"b{i}")]
            nodes.append(helper.make_node("Gemm", [name, f"W{i}", f"b{i}"], [f"h{i}"], transB=1))
        else:
            nodes.append(helper.make_node("Relu", [name], [f"h{i}"]))
        name = f"h{i}"
    if final:
        nodes.append(helper.make_node(final, [name], ["p"], **({"axis": 1} if final == "Softmax" else {})))
        name = "p"
    n_in, n_out = network.input_shape[0], network.output_shape[0]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def margins(network, x, A, b):
    y = network(torch.as_tensor(x, dtype=torch.float32)[None])[0].double().numpy()
    return np.atleast_2d(A) @ y - b


def test_finds_an_easy_counterexample_and_replays_it(tmp_path):
    net = dense_net([4, 16, 16, 3], 0)
    lower, upper = -np.ones(4, dtype=np.float32), np.ones(4, dtype=np.float32)
    samples = net(torch.rand(4096, 4) * 2 - 1).detach().numpy()
    A = np.array([[1.0, -1.0, 0.0]])
    b = np.array([np.median(samples[:, 0] - samples[:, 1])])
    x = find_counterexample(net, lower, upper, [A], [b], seed=0)
    assert x is not None and x.dtype == np.float32 and x.shape == (4,)
    assert np.all(lower <= x) and np.all(x <= upper) and np.all(margins(net, x, A, b) <= 0)
    assert replay_on_onnx(write_onnx(net, tmp_path / "net.onnx"), x, A, b)


def test_descent_reaches_a_counterexample_that_sampling_misses():
    net = dense_net([20, 32, 32, 2], 1)
    lower, upper = -np.ones(20, dtype=np.float32), np.ones(20, dtype=np.float32)
    A = np.array([[1.0, -1.0]])
    y = net(torch.rand(20000, 20) * 2 - 1).detach()
    threshold = float((y[:, 0] - y[:, 1]).min())
    while find_counterexample(net, lower, upper, [A], [np.array([threshold])], steps=0, seed=0) is not None:
        threshold -= 0.1  # lower the bar until sampling (center, corners, faces, uniform) misses it
    x = find_counterexample(net, lower, upper, [A], [np.array([threshold])], seed=0)
    assert x is not None and np.all(margins(net, x, A, threshold) <= 0)


def test_none_when_the_constraint_cannot_hold():
    net = dense_net([3, 8, 2], 2)
    # duplicate output 0 as output 1 shifted by +1, so y_1 - y_0 = 1 everywhere
    last = net.layers[-1]
    weight = torch.stack([last.weight[0], last.weight[0]])
    bias = torch.stack([last.bias[0], last.bias[0] + 1.0])
    net = net.with_layers(net.layers[:-1] + (Dense(weight, bias),))
    lower, upper = -np.ones(3), np.ones(3)
    A = np.array([[-1.0, 1.0]])  # y_1 - y_0 <= 0.5 is impossible
    assert find_counterexample(net, lower, upper, [A], [np.array([0.5])], seed=0) is None
    assert find_counterexample(net, lower, upper, [np.zeros((1, 2))], [np.array([-1.0])], seed=0) is None


def test_disjunction_any_conjunction_suffices():
    net = dense_net([3, 8, 2], 3)
    lower, upper = -np.ones(3), np.ones(3)
    impossible = (np.zeros((1, 2)), np.array([-1.0]))
    anything = (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1e6, 1e6]))
    x = find_counterexample(net, lower, upper, [impossible[0], anything[0]], [impossible[1], anything[1]], seed=0)
    assert x is not None
    no_rows = find_counterexample(net, lower, upper, [np.zeros((0, 2))], [np.zeros(0)], seed=0)
    assert no_rows is not None  # a conjunction without rows holds everywhere


def test_deterministic_under_a_seed():
    net = dense_net([6, 16, 3], 4)
    lower, upper = np.zeros(6), np.ones(6)
    y = net(torch.rand(2048, 6)).detach().numpy()
    A, b = np.array([[0.0, 1.0, -1.0]]), np.array([np.quantile(y[:, 1] - y[:, 2], 0.01)])
    runs = [find_counterexample(net, lower, upper, [A], [b], seed=7) for _ in range(2)]
    assert runs[0] is not None and np.array_equal(runs[0], runs[1])


def test_point_boxes_and_float32_rounding_stay_inside():
    net = dense_net([3, 8, 2], 5)
    lower = np.array([0.1, -0.3, 0.2])
    upper = np.array([0.1, 0.7, 0.2 + 1e-9])  # coordinates 0 and 2 have no float32 strictly inside
    x = find_counterexample(net, lower, upper, [np.zeros((0, 2))], [np.zeros(0)], seed=0)
    assert x is not None and -0.3 <= x[1] <= 0.7
    assert x[0] == np.float32(0.1) and x[2] == np.float32(0.2)  # the nearest float32 to the point


def test_convolutional_input_shape():
    g = torch.Generator().manual_seed(6)
    net = Network([Conv2d(torch.randn(2, 1, 3, 3, generator=g), torch.zeros(2)), ReLU(), Flatten(),
                   Dense(torch.randn(2, 4, generator=g), torch.zeros(2))], (1, 4, 3))
    lower, upper = np.zeros((1, 4, 3)), np.ones((1, 4, 3))
    x = find_counterexample(net, lower.ravel(), upper.ravel(), [np.array([[1.0, -1.0]])], [np.array([0.0])], seed=0)
    y = net(torch.as_tensor(x)[None])[0]
    assert x.shape == (1, 4, 3) and y[0] <= y[1]


@pytest.mark.parametrize("final", ["Softmax", "Sigmoid"])
def test_replay_compares_the_onnx_outputs_as_they_are(tmp_path, final):
    net = dense_net([4, 8, 3], 7)
    path = write_onnx(net, tmp_path / "net.onnx", final)
    x = np.zeros(4, dtype=np.float32)
    logits = net(torch.as_tensor(x)[None])[0].double().numpy()
    top = int(np.argmax(logits))
    other = (top + 1) % 3
    order = (np.eye(3)[[other]] - np.eye(3)[[top]], np.zeros(1))  # y_other - y_top <= 0: true on logits
    assert replay_on_onnx(path, x, *order)  # and after the monotone transform
    assert not replay_on_onnx(path, x, -order[0], order[1])
    above_one = (-np.eye(3)[[top]], np.array([-1.0]))  # y_top >= 1: about probabilities, never true
    assert not replay_on_onnx(path, x, *above_one)
    assert replay_on_onnx(path, x, [above_one[0], order[0]], [above_one[1], order[1]])  # a disjunction
