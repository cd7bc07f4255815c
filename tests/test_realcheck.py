"""--arithmetic real: a counterexample counts only if the exact real-valued network violates the property too.
The float64 outputs' error bound is checked against exact rational arithmetic, and a float32-only near tie
(exact margin 2^-46) is falsified in float32 and not in real arithmetic, through the fast path and the full
engine."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

import certprune
from certprune.cli.main import main
from certprune.fastconv import apply
from certprune.network import Add, Dense, Network, ReLU
from certprune.bounds.rounding import real_outputs
from certprune.onnx_io import load_onnx, weights_from_file
from certprune.realcheck import chain_outputs, holds_for_real

TIE_X = 1 + 2**-23  # float32; w * x = 1 + 2^-22 + 2^-46 rounds to 1 + 2^-22 in float32, exactly kept in float64


def _exact(weights, biases, x) -> list[Fraction]:
    h = [Fraction(float(v)) for v in x]
    for k, (W, b) in enumerate(zip(weights, biases)):
        h = [sum((Fraction(float(w)) * v for w, v in zip(row, h)), Fraction(float(c))) for row, c in zip(W, b)]
        if k < len(weights) - 1:
            h = [max(v, Fraction(0)) for v in h]
    return h


@pytest.mark.parametrize("seed", range(6))
def test_float64_outputs_are_within_their_error_bound_of_the_exact_ones(seed):
    rng = np.random.default_rng(seed)
    sizes = [5, 12, 9, 3]
    weights = [rng.normal(0, 1, (m, n)).astype(np.float32) for n, m in zip(sizes, sizes[1:])]
    biases = [rng.normal(0, 1, m).astype(np.float32) for m in sizes[1:]]
    x = rng.uniform(-1, 1, sizes[0]).astype(np.float32)
    exact = np.array([float(v) for v in _exact(weights, biases, x)])  # rounded once at the end: 1e-16 relative
    y, error = chain_outputs(weights, biases, x, apply)
    assert np.all(np.abs(y - exact) <= error + 1e-16 * np.abs(exact))
    assert np.all(error <= 1e-12 * (1 + np.abs(exact)))  # tight: a float32 bound would be ~1e-6
    layers = []
    for k, (W, b) in enumerate(zip(weights, biases)):
        layers.append(Dense(torch.from_numpy(W), torch.from_numpy(b)))
        if k < len(weights) - 1:
            layers.append(ReLU())
    y2, error2 = real_outputs(Network(tuple(layers), (5,)), x, exact_weights=True)
    assert np.all(np.abs(y2 - exact) <= error2 + 1e-16 * np.abs(exact)) and np.all(error2 <= 1e-9 * (1 + np.abs(exact)))


def test_a_conjunction_holds_for_real_only_with_the_error_against_it():
    A, b = np.array([[1.0, -1.0]]), np.array([0.0])
    assert holds_for_real(np.array([0.0, 1e-9]), np.zeros(2), [(A, b)])
    assert not holds_for_real(np.array([0.0, 1e-9]), np.full(2, 1e-9), [(A, b)])  # the error could close the gap
    assert not holds_for_real(np.array([0.0, 0.0]), np.zeros(2), [(A, np.array([-1e-300]))])
    assert holds_for_real(np.array([5.0, 0.0]), np.zeros(2), [(A, b), (np.array([[0.0, 1.0]]), np.array([0.0]))])


def _tie_models(folder, sign: float = 1.0):
    first = Dense(torch.tensor([[TIE_X]], dtype=torch.float32), torch.zeros(1))
    last = Dense(sign * torch.ones(1, 1), torch.tensor([-sign * (1 + 2**-22)], dtype=torch.float32))
    chain = Network((first, ReLU(), last), (1,))  # float32: y = 0; exact: y = 2^-46
    graph = Network((first, ReLU(), last, Dense(torch.zeros(1, 1), torch.zeros(1)), Add()), (1,),
                    inputs=((-1,), (0,), (1,), (-1,), (2, 3)))  # the same with a residual join: full engine
    certprune.save_onnx(chain, folder / "chain.onnx")
    certprune.save_onnx(graph, folder / "graph.onnx")
    (folder / "tie.vnnlib").write_text(
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
        f"(assert (>= X_0 {TIE_X!r}))\n(assert (<= X_0 {TIE_X!r}))\n(assert (<= Y_0 0.0))\n")


@pytest.mark.parametrize("model", ["chain.onnx", "graph.onnx"])
def test_a_float32_only_counterexample_is_not_one_of_the_real_network(tmp_path, model, capsys):
    _tie_models(tmp_path)
    args = ["verify", str(tmp_path / model), "--property", str(tmp_path / "tie.vnnlib"), "--timeout", "6"]
    assert main(args) == 10  # onnxruntime's float32 output is 0 <= 0: the float32 model is falsified
    capsys.readouterr()
    assert main(args + ["--arithmetic", "real"]) == 20  # the exact output is 2^-46 > 0: not a counterexample
    assert "falsified" not in capsys.readouterr().out


@pytest.mark.parametrize("model", ["chain.onnx", "graph.onnx"])
def test_a_point_that_holds_in_float32_but_not_for_real_is_never_proven_in_real_arithmetic(tmp_path, model):
    """The mirror image: float32 output 0, exact output -2^-46, unsafe set Y_0 <= -2^-60. onnxruntime's 0 holds,
    so the float32 model is verified (its one input replays safe); the real-valued network violates the
    property, so real arithmetic must not say verified (it said so before: the point was closed by its float32
    replay) and cannot say falsified (onnxruntime does not see the violation)."""
    _tie_models(tmp_path, sign=-1.0)
    (tmp_path / "below.vnnlib").write_text(
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
        f"(assert (>= X_0 {TIE_X!r}))\n(assert (<= X_0 {TIE_X!r}))\n(assert (<= Y_0 {-2.0**-60!r}))\n")
    args = ["verify", str(tmp_path / model), "--property", str(tmp_path / "below.vnnlib"), "--timeout", "6"]
    assert main(args) == 0
    assert main(args + ["--arithmetic", "real"]) == 20


def _div3(path):
    """y = relu(x / 3) @ 1: the loader folds the Div into a float32 weight, which is not the file's 1/3."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Div", ["x", "three"], ["d"]), helper.make_node("MatMul", ["d", "W1"], ["h"]),
             helper.make_node("Add", ["h", "b1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["h2"]), helper.make_node("Add", ["h2", "b2"], ["y"])]
    constants = {"three": [3.0], "W1": [[1.0]], "b1": [0.0], "W2": [[1.0]], "b2": [0.0]}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def test_a_folded_division_keeps_the_float32_bound_and_its_near_tie_is_not_confirmed(tmp_path, capsys):
    """float32(1/3) = 0.3333333432674408 meets y >= 0.33333334 in float32; the exact 1/3 misses it by 1e-8."""
    _div3(tmp_path / "div3.onnx")
    network = load_onnx(tmp_path / "div3.onnx")
    assert not weights_from_file(tmp_path / "div3.onnx", network)
    _tie_models(tmp_path)
    assert weights_from_file(tmp_path / "graph.onnx", load_onnx(tmp_path / "graph.onnx"))
    y, error = real_outputs(network, np.array([1.0]), exact_weights=False)
    assert error[0] > abs(y[0] - 1 / 3)  # the folded weight's own rounding is inside the bound
    (tmp_path / "div3.vnnlib").write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
                                          "(assert (>= X_0 1.0))\n(assert (<= X_0 1.0))\n"
                                          "(assert (>= Y_0 0.3333333432664408))\n")
    args = ["verify", str(tmp_path / "div3.onnx"), "--property", str(tmp_path / "div3.vnnlib"), "--timeout", "6"]
    assert main(args) == 10
    capsys.readouterr()
    assert main(args + ["--arithmetic", "real"]) == 20


def test_where_float64_may_underflow_nothing_is_confirmed():
    weights = [np.array([[2.0**-149]], dtype=np.float32)] * 8  # exact output 2^-1192 > 0; float64 gives 0
    y, error = chain_outputs(weights, [np.zeros(1, np.float32)] * 8, np.ones(1, np.float32), apply)
    assert not holds_for_real(y, error, [(np.array([[1.0]]), np.array([0.0]))])  # y <= 0 is not confirmed


def test_a_real_counterexample_at_a_corner_that_is_no_float32_is_moved_inside_the_box(tmp_path, capsys):
    """The float32 nearest x <= 0.1 is 0.10000000149, outside the real box: in real arithmetic the reported
    input must be the float32 point of the box itself, through the fast path (a chain) and the full engine
    (a graph) alike."""
    import json

    identity = Dense(torch.ones(1, 1), torch.zeros(1))
    chain = Network((identity, ReLU(), Dense(torch.ones(1, 1), torch.zeros(1))), (1,))
    graph = Network((identity, ReLU(), Dense(torch.ones(1, 1), torch.zeros(1)), Dense(torch.zeros(1, 1),
                                                                                       torch.zeros(1)), Add()),
                    (1,), inputs=((-1,), (0,), (1,), (-1,), (2, 3)))
    (tmp_path / "p.vnnlib").write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 0.0))\n"
                                       "(assert (<= X_0 0.1))\n(assert (>= Y_0 0.0999))\n")
    for name, network in (("chain.onnx", chain), ("graph.onnx", graph)):
        certprune.save_onnx(network, tmp_path / name)
        out = tmp_path / f"{name}.json"
        assert main(["verify", str(tmp_path / name), "--property", str(tmp_path / "p.vnnlib"), "--timeout", "10",
                     "--arithmetic", "real", "--json", str(out), "--quiet"]) == 10
        x = json.loads(out.read_text())["counterexample"]["x"][0]
        assert 0.0999 <= x <= 0.1


def _subnormal_box(folder, name: str, rows: str) -> str:
    (folder / name).write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
                               f"(assert (>= X_0 0.0))\n(assert (<= X_0 {2.0**-149!r}))\n{rows}")
    return str(folder / name)


def test_a_box_below_float32s_normal_range_is_not_a_point_to_the_bounds(tmp_path):
    """The box [0, 2^-149] (its float32 inputs: 0 and 2^-149). IBP's centre and radius both round to 0 there,
    and the relative margin does not cover results below 2^-126: y = 2^126 x was 'verified' to stay below 2^-24
    by IBP while onnxruntime gives 2^-23 at x = 2^-149 (bounds.base.TINY). The chain goes through the fast path,
    the graph through the full engine."""
    first = Dense(torch.tensor([[2.0**126]], dtype=torch.float32), torch.zeros(1))
    certprune.save_onnx(Network((first, Dense(torch.zeros(1, 1), torch.zeros(1)), Add()), (1,),
                                inputs=((-1,), (-1,), (0, 1))), tmp_path / "graph.onnx")
    certprune.save_onnx(Network((first,), (1,)), tmp_path / "chain.onnx")
    prop = _subnormal_box(tmp_path, "q.vnnlib", f"(assert (>= Y_0 {2.0**-24!r}))\n")
    for model in ("graph.onnx", "chain.onnx"):
        assert main(["verify", str(tmp_path / model), "--property", prop, "--timeout", "20"]) == 10


def test_real_points_between_two_adjacent_float32_inputs_are_never_proven_by_their_ends(tmp_path):
    """y = -|2^126 x - 2^-24|: -2^-24 at both float32 inputs 0 and 2^-149 of the box, 0 at the real x = 2^-150
    between them. Unsafe set Y_0 >= -2^-30: the float32 model is safe, the real-valued network is not; real
    arithmetic said 'verified' (IBP took the box for the point 0). Splitting such a box into its two ends is
    refused in real arithmetic too (bab.search._splittable), though the margins now keep both ends open."""
    first = Dense(torch.tensor([[2.0**126], [-(2.0**126)]], dtype=torch.float32),
                  torch.tensor([-(2.0**-24), 2.0**-24], dtype=torch.float32))
    last = Dense(torch.tensor([[-1.0, -1.0]], dtype=torch.float32), torch.zeros(1))
    graph = Network((first, ReLU(), last, Dense(torch.zeros(1, 1), torch.zeros(1)), Add()), (1,),
                    inputs=((-1,), (0,), (1,), (-1,), (2, 3)))
    certprune.save_onnx(graph, tmp_path / "g.onnx")
    prop = _subnormal_box(tmp_path, "p.vnnlib", f"(assert (>= Y_0 {-2.0**-30!r}))\n")
    args = ["verify", str(tmp_path / "g.onnx"), "--property", prop, "--timeout", "20"]
    assert main(args) == 0  # onnxruntime: -2^-24 at both float32 inputs
    assert main(args + ["--arithmetic", "real"]) == 20


def test_a_box_left_unknown_does_not_hide_a_later_falsified_one(tmp_path):
    """Two boxes: the point TIE_X (float32 output 0, exact -2^-46 below the unsafe Y_0 <= -2^-60: unknown in real
    arithmetic) first, then [2, 3], where the property is plainly violated. The search stopped at the first box
    that was not verified, so the answer depended on the boxes' order."""
    _tie_models(tmp_path, sign=-1.0)
    point, wide = f"(and (>= X_0 {TIE_X!r}) (<= X_0 {TIE_X!r}))", "(and (>= X_0 2.0) (<= X_0 3.0))"
    for first, second in ((point, wide), (wide, point)):
        (tmp_path / "two.vnnlib").write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
                                             f"(assert (<= Y_0 {-2.0**-60!r}))\n(assert (or {first} {second}))\n")
        args = ["verify", str(tmp_path / "graph.onnx"), "--property", str(tmp_path / "two.vnnlib"), "--timeout", "20"]
        assert main(args + ["--arithmetic", "real"]) == 10
