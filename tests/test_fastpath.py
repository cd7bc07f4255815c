"""The numpy fast path: the ONNX chain it reads is the Network load_onnx reads, its bounds are CROWN's (same
rounding margins) and hold for sampled float32 outputs, and it never contradicts the expected answers."""
from __future__ import annotations

import csv
import json
import math
from fractions import Fraction
import subprocess
import sys

import numpy as np
import onnxruntime  # noqa: F401 (the replay needs it; fail here rather than inside a test)
import pytest
import torch

from certprune import fastconv, fastpath
from certprune.bounds import CROWN
from certprune.bounds.base import REL
from certprune.deadline import Deadline
from certprune.network import Dense, Network, ReLU
from certprune.onnx_io import load_onnx, save_onnx
from certprune.runtime import OnnxRuntimeModel
from certprune.spec.vnnlib import read_vnnlib
from tests.conftest import ACASXU, MODELS, REPO
from tests.netgen import random_graph, random_network

# Dev instances that 60 boxes decide (CROWN on a few boxes, or the attack).
EASY = {("1_9", "prop_1"), ("1_4", "prop_3"), ("1_5", "prop_3"), ("1_6", "prop_3"),
        ("1_7", "prop_3"), ("1_8", "prop_3"), ("1_9", "prop_3"), ("1_4", "prop_4"), ("1_5", "prop_4"),
        ("1_6", "prop_4"), ("1_7", "prop_4"), ("1_8", "prop_4"), ("1_9", "prop_4")}


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """As the CLI runs it (cli.main sets OPENBLAS_NUM_THREADS): two threads on two busy cores run 2-4x slower."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


def test_margin_is_the_bound_methods():
    assert fastpath.REL == REL[torch.float32]


@pytest.mark.parametrize("model", ["acasxu", "random"])
def test_chain_is_what_load_onnx_reads(model, tmp_path):
    if model == "random":
        save_onnx(random_network(3, 7, (5,), seed=2), tmp_path / "m.onnx")
    model = ACASXU / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx" if model == "acasxu" else tmp_path / "m.onnx"
    chain, network = fastpath.read_chain(model), load_onnx(model)
    dense = [layer for layer in network.layers if layer.kind == "dense"]
    assert [layer.kind for layer in network.layers if layer.kind != "flatten"] == \
        ["dense", "relu"] * (len(dense) - 1) + ["dense"]
    for w, b, layer in zip(chain.weights, chain.biases, dense, strict=True):
        assert np.array_equal(w, layer.weight.numpy()) and np.array_equal(b, layer.bias.numpy())


def test_other_models_are_left_to_the_full_engine(tmp_path):
    graph = random_graph(1, kind="conv")
    save_onnx(graph, tmp_path / "graph.onnx")
    with pytest.raises(fastpath.NotAChain):
        fastpath.read_chain(tmp_path / "graph.onnx")
    with pytest.raises(fastpath.NotAChain, match="Sub"):  # a normalisation that is not the identity
        fastpath.read_chain(MODELS / "mnist_mlp_100x2.onnx")
    (tmp_path / "p.vnnlib").write_text(_box_property(math.prod(graph.input_shape), 3))
    result, details = fastpath.try_vnnlib(tmp_path / "graph.onnx", read_vnnlib(tmp_path / "p.vnnlib"), Deadline(10))
    assert result is None and details["fast_path"].startswith("not taken")


@pytest.mark.parametrize("seed", range(6))
def test_convolutional_chains_are_read_as_onnxruntime_runs_them(tmp_path, seed, monkeypatch):
    """Convolutions (random kernels, strides, padding) as dense matrices, or applied offset by offset when too
    large to unroll (forced here): the same products, and the chain's outputs are onnxruntime's."""
    network = random_network(3, 4, (2, 7, 6), conv=True, seed=seed, outputs=3)
    save_onnx(network, tmp_path / "m.onnx")
    x = np.random.default_rng(seed).normal(size=(20, 84)).astype(np.float32)
    expected = OnnxRuntimeModel(tmp_path / "m.onnx")(x.reshape(20, 2, 7, 6)).astype(np.float64)
    unrolled = fastpath.read_chain(tmp_path / "m.onnx")
    monkeypatch.setattr(fastconv, "UNROLL", 0)
    applied = fastpath.read_chain(tmp_path / "m.onnx")
    assert any(isinstance(w, fastconv.Conv) for w in applied.weights)
    for chain in (unrolled, applied):
        assert np.allclose(chain.forward(x)[0], expected, rtol=1e-5, atol=1e-5)
    A = np.random.default_rng(seed).normal(size=(5, applied.weights[0].shape[0]))
    assert np.allclose(fastconv.back(A, applied.weights[0]), A @ unrolled.weights[0])
    assert isinstance(unrolled.weights[0], np.ndarray) and unrolled.weights[0].shape == applied.weights[0].shape


@pytest.mark.parametrize("seed", range(4))
def test_convolutional_bounds_are_crowns_and_hold(tmp_path, seed, monkeypatch):
    """The fast path's CROWN on a convolutional chain (unrolled or not) is the full engine's, and sampled
    onnxruntime outputs lie above it."""
    rng = np.random.default_rng(seed)
    network = random_network(3, 4, (2, 7, 6), conv=True, seed=seed, outputs=3)
    save_onnx(network, tmp_path / "m.onnx")
    C = rng.normal(size=(4, 3))
    centre = rng.normal(size=(3, 84))
    lo, hi = (centre - 0.05).astype(np.float32), (centre + 0.05).astype(np.float32)
    shape = (3, 2, 7, 6)
    theirs = CROWN().compute(network, torch.tensor(lo.reshape(shape)), torch.tensor(hi.reshape(shape)),
                             C=torch.tensor(C, dtype=torch.float32)).output_lower.numpy()
    runtime = OnnxRuntimeModel(tmp_path / "m.onnx")
    for unroll in (fastconv.UNROLL, 0):
        monkeypatch.setattr(fastconv, "UNROLL", unroll)
        monkeypatch.setattr(fastpath, "ELEMENTS", fastpath.ELEMENTS if unroll else 50)  # rows in chunks too
        chain = fastpath.read_chain(tmp_path / "m.onnx")
        ours = fastpath.Bounder(chain, C).lower(lo.astype(np.float64), hi.astype(np.float64))
        assert np.allclose(ours, theirs, rtol=1e-4, atol=1e-4)
        for b in range(3):
            x = (lo[b] + rng.random((300, 84), dtype=np.float32) * (hi[b] - lo[b])).astype(np.float32)
            y = runtime(x.reshape(300, 2, 7, 6)).astype(np.float64)
            assert np.all(y @ C.T >= ours[b]), (seed, b)


@pytest.mark.parametrize("seed", range(6))
def test_bounds_are_crowns_and_hold_for_sampled_outputs(tmp_path, seed):
    """Same recurrences and margins as bounds.CROWN (float64 here, float32 there: equal up to float32
    rounding), and below C @ y for outputs sampled in each box, from onnxruntime and from the chain."""
    rng = np.random.default_rng(seed)
    network = random_network(3, 12, (4,), seed=seed, outputs=3)
    save_onnx(network, tmp_path / "m.onnx")
    chain, runtime = fastpath.read_chain(tmp_path / "m.onnx"), OnnxRuntimeModel(tmp_path / "m.onnx")
    C = rng.normal(size=(5, 3))
    centre = rng.normal(size=(8, 4))
    radius = rng.uniform(0, 1.0, size=(8, 4)) * (rng.random((8, 1)) < 0.8)  # some boxes are points
    lo, hi = (centre - radius).astype(np.float32), (centre + radius).astype(np.float32)
    ours = fastpath.Bounder(chain, C).lower(lo.astype(np.float64), hi.astype(np.float64))
    theirs = CROWN().compute(network, torch.tensor(lo), torch.tensor(hi), C=torch.tensor(C, dtype=torch.float32))
    assert np.allclose(ours, theirs.output_lower.numpy(), rtol=1e-4, atol=1e-4)
    for b in range(len(lo)):
        x = (lo[b] + rng.random((200, 4), dtype=np.float32) * (hi[b] - lo[b])).astype(np.float32)
        x[:2] = lo[b], hi[b]
        for y in (runtime(x).astype(np.float64), chain.forward(x)[0].astype(np.float64)):
            assert np.all(y @ C.T >= ours[b] - 0.0), (seed, b)


def test_a_point_box_bound_covers_float32_rounding(tmp_path):
    """On a box that is one input, the bound sits within the margin below the exact float32 output: without
    the widening it could lie above it (the float64 value differs from float32's in the last bits)."""
    network = random_network(4, 30, (6,), seed=3, outputs=2)
    save_onnx(network, tmp_path / "m.onnx")
    chain, runtime = fastpath.read_chain(tmp_path / "m.onnx"), OnnxRuntimeModel(tmp_path / "m.onnx")
    x = np.random.default_rng(3).normal(size=(50, 6)).astype(np.float32)
    bound = fastpath.Bounder(chain, np.eye(2)).lower(x.astype(np.float64), x.astype(np.float64))
    y = runtime(x).astype(np.float64)
    assert np.all(bound <= y)
    assert np.all(y - bound <= 1e-3 * (1 + np.abs(y)))  # a margin, not a loose bound


def _dev_instances():
    with open(ACASXU / "instances.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("row", _dev_instances(), ids=lambda r: f"{r['onnx'][18:-16]}-{r['vnnlib'][7:-7]}")
def test_acasxu_dev_answers_agree(row, acasxu_dir):
    """Decided or handed over, never a wrong answer; a counterexample replays on onnxruntime in the box."""
    prop = read_vnnlib(acasxu_dir / row["vnnlib"])
    result, _ = fastpath.try_vnnlib(acasxu_dir / row["onnx"], prop, Deadline(math.inf), budget=math.inf,
                                    max_domains=100)
    name = (row["onnx"][18:-16], row["vnnlib"][7:-7])
    assert result is not None or name not in EASY
    if result is None:
        return
    assert {"verified": "unsat", "falsified": "sat"}[result.verdict.value] == row["expected"]
    if row["expected"] == "sat":
        x = np.asarray(result.counterexample.inputs, dtype=np.float32)
        box = prop.disjuncts[0]
        assert np.all(x >= box.lower.astype(np.float32)) and np.all(x <= box.upper.astype(np.float32))
        y = OnnxRuntimeModel(acasxu_dir / row["onnx"]).run_flat(x).astype(np.float64)
        assert any(np.all(A @ y <= b) for A, b in box.constraints)


def test_verify_decides_an_easy_instance_without_torch(tmp_path, acasxu_dir):
    code = (
        "import sys\n"
        "from certprune.cli.main import main\n"
        f"code = main(['verify', {str(acasxu_dir / 'onnx' / 'ACASXU_run2a_1_6_batch_2000.onnx')!r}, '--property',"
        f" {str(acasxu_dir / 'vnnlib' / 'prop_3.vnnlib')!r}, '--quiet'])\n"
        "heavy = sorted(m for m in ('torch', 'onnx', 'scipy', 'z3', 'yaml') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.splitlines()[-1] == "0 []"


def test_a_timeout_too_short_to_start_the_full_engine_ends_without_it(tmp_path):
    """--timeout 0.3 on an instance the fast path hands over used to end after 2.3 s: torch's import alone."""
    from certprune.data import load_mnist

    x, y = load_mnist("test")
    image, label = x[0].numpy().reshape(-1).astype(np.float64), int(y[0])
    lines = [f"(declare-const X_{i} Real)" for i in range(784)] + [f"(declare-const Y_{j} Real)" for j in range(10)]
    lines += [f"(assert (>= X_{i} {max(v - 0.05, 0):.6f}))\n(assert (<= X_{i} {min(v + 0.05, 1):.6f}))"
              for i, v in enumerate(image)]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(10) if j != label) + "))")
    (tmp_path / "p.vnnlib").write_text("\n".join(lines) + "\n")
    code = (
        "import sys\n"
        "from certprune.cli.main import main\n"
        f"code = main(['verify', {str(MODELS / 'mnist_mlp_256x3.onnx')!r}, '--property', {str(tmp_path / 'p.vnnlib')!r},"
        f" '--timeout', '1', '--quiet', '--json', {str(tmp_path / 'r.json')!r}])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.splitlines()[-1] == "20 False"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["result"] == "timeout" and "too little time" in report["details"]["decided_by"]


def _box_property(n_in: int, n_out: int) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)] + [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    lines += [f"(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))" for i in range(n_in)]
    return "\n".join(lines + ["(assert (<= Y_0 -100))"]) + "\n"


def _near_tie(tmp_path, seed: int, gap: float):
    """A chain whose hidden ReLUs are active on the box [0.25, 0.75]^3, so the network is affine there; the
    output bias (float32) puts the exact minimum of Y_0 over the box near ``gap``. Returns the model's path,
    the property (unsafe: Y_0 <= 0) and that exact minimum, computed in rational arithmetic on the float32
    weights (the real-valued network's ground truth)."""
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(4, 3, generator=gen)
    b1 = (w1.abs().sum(1) + 1).float()  # > |w1 x| on the box: every ReLU active
    w2 = torch.randn(1, 4, generator=gen)
    lo, hi = Fraction(1, 4), Fraction(3, 4)
    W1 = [[Fraction(float(v)) for v in row] for row in w1.tolist()]
    B1 = [Fraction(float(v)) for v in b1.tolist()]
    W2 = [Fraction(float(v)) for v in w2[0].tolist()]
    coefficient = [sum(W2[j] * W1[j][i] for j in range(4)) for i in range(3)]
    assert all(B1[j] + sum(min(W1[j][i] * lo, W1[j][i] * hi) for i in range(3)) > 0 for j in range(4))

    def exact_minimum(bias: Fraction) -> Fraction:
        return sum(min(c * lo, c * hi) for c in coefficient) + sum(W2[j] * B1[j] for j in range(4)) + bias

    b2 = torch.tensor([float(-exact_minimum(Fraction(0)) + Fraction(gap))], dtype=torch.float32)
    network = Network((Dense(w1, b1), ReLU(), Dense(w2, b2)), (3,))
    save_onnx(network, tmp_path / f"tie{seed}.onnx")
    lines = [f"(declare-const X_{i} Real)" for i in range(3)] + ["(declare-const Y_0 Real)"]
    lines += [f"(assert (>= X_{i} 0.25))\n(assert (<= X_{i} 0.75))" for i in range(3)] + ["(assert (<= Y_0 0))"]
    (tmp_path / "tie.vnnlib").write_text("\n".join(lines) + "\n")
    return tmp_path / f"tie{seed}.onnx", read_vnnlib(tmp_path / "tie.vnnlib"), exact_minimum(Fraction(float(b2[0])))


@pytest.mark.parametrize("seed", range(4))
def test_real_arithmetic_decides_near_ties_that_float32_margins_cannot(tmp_path, seed):
    """Exact minimum about +1e-5 (rational arithmetic): the float32 model's margin (2^-15 of the terms) hides
    it, the real-valued network's (2^-30) does not; the mirror case (about -1e-5: the real network violates
    the property) is never proven."""
    model, prop, minimum = _near_tie(tmp_path, seed, 1e-5)
    assert 0 < minimum < Fraction(2, 10**5)
    float32, _ = fastpath.try_vnnlib(model, prop, Deadline(math.inf), budget=math.inf, max_domains=300)
    real, details = fastpath.try_vnnlib(model, prop, Deadline(math.inf), budget=math.inf, max_domains=300,
                                        arithmetic="real")
    assert float32 is None  # open: undecided, handed over
    assert real is not None and real.verdict.value == "verified" and details["arithmetic"] == "real"
    model, prop, minimum = _near_tie(tmp_path, seed, -1e-5)
    assert -Fraction(2, 10**5) < minimum < 0
    for arithmetic in ("float32", "real"):
        result, _ = fastpath.try_vnnlib(model, prop, Deadline(math.inf), budget=math.inf, max_domains=300,
                                        arithmetic=arithmetic)
        assert result is None or result.verdict.value == "falsified"


def test_verify_says_what_a_proof_is_about(tmp_path, capsys):
    from certprune.cli.main import main

    model, _, _ = _near_tie(tmp_path, 0, 1e-5)
    verify = ["verify", str(model), "--property", str(tmp_path / "tie.vnnlib"), "--timeout", "30", "--quiet"]
    assert main(verify + ["--arithmetic", "real", "--json", str(tmp_path / "r.json")]) == 0
    assert "proven for the real-valued network" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["arithmetic"] == "real"
    (tmp_path / "f.yaml").write_text("kind: fairness\n")
    assert main(["verify", str(model), "--property", str(tmp_path / "f.yaml"), "--arithmetic", "real"]) == 2
    assert "VNN-LIB properties only" in capsys.readouterr().err


def _collins_like(path, training_mode=None):
    """Conv (k x 1 kernels, as collins_rul_cnn) -> Relu -> Dropout -> Conv over the whole map -> Flatten."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(size=(3, 1, 3, 1)), "b1": rng.normal(size=3), "w2": rng.normal(size=(2, 3, 4, 5)),
               "b2": rng.normal(size=2), "ratio": np.array(0.5)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    dropout_inputs = ["r", "ratio"]
    if training_mode is not None:
        inits.append(numpy_helper.from_array(np.array(training_mode), "mode"))
        dropout_inputs.append("mode")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], kernel_shape=[3, 1], pads=[0, 0, 0, 0]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Dropout", dropout_inputs, ["d"]),
             helper.make_node("Conv", ["d", "w2", "b2"], ["y4"]),
             helper.make_node("Flatten", ["y4"], ["y"])]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 5])
    graph = helper.make_graph(nodes, "collins_like", [x_info],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_dropout_is_the_identity_at_inference_only(tmp_path):
    _collins_like(tmp_path / "m.onnx")
    chain = fastpath.read_chain(tmp_path / "m.onnx")
    x = np.random.default_rng(1).normal(size=(7, 30)).astype(np.float32)
    expected = OnnxRuntimeModel(tmp_path / "m.onnx")(x.reshape(7, 1, 6, 5))
    assert np.allclose(chain.forward(x)[0], expected, rtol=1e-5, atol=1e-5)
    _collins_like(tmp_path / "f.onnx", training_mode=False)
    assert np.allclose(fastpath.read_chain(tmp_path / "f.onnx").forward(x)[0], expected, rtol=1e-5, atol=1e-5)
    _collins_like(tmp_path / "t.onnx", training_mode=True)
    with pytest.raises(fastpath.NotAChain, match="training mode"):
        fastpath.read_chain(tmp_path / "t.onnx")


def test_convolution_with_dilation_strides_and_uneven_padding():
    """``fastconv`` against torch's convolution (padding applied first, as ONNX pads top, left, bottom, right)."""
    import torch.nn.functional as F

    rng = np.random.default_rng(4)
    weight = rng.normal(size=(3, 2, 3, 2)).astype(np.float32)
    conv = fastconv.Conv(weight, (2, 1), (1, 0, 2, 1), (2, 1), (2, 9, 7))
    x = rng.normal(size=(4, 2 * 9 * 7)).astype(np.float32)
    padded = F.pad(torch.tensor(x).reshape(4, 2, 9, 7), (0, 1, 1, 2))  # (left, right, top, bottom)
    expected = F.conv2d(padded, torch.tensor(weight), stride=(2, 1), dilation=(2, 1)).reshape(4, -1).numpy()
    assert conv.out_shape == tuple(F.conv2d(padded, torch.tensor(weight), stride=(2, 1), dilation=(2, 1)).shape[1:])
    assert np.allclose(conv.apply(x), expected, atol=1e-5)
    matrix = fastconv.linear_map(conv)
    assert isinstance(matrix, np.ndarray) and np.allclose(x @ matrix.T, expected, atol=1e-5)
    A = rng.normal(size=(5, matrix.shape[0]))
    assert np.allclose(conv.back(A), A @ matrix.astype(np.float64))


def _unbatched(path, seed: int, w_first: bool):
    """Rank-1 input and output, no batch dimension (as VNN-COMP's test_tiny / test_small): W x + b (or x W + b)
    -> Relu -> ... -> a final Relu at the graph output (as test_nano)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    sizes, nodes, inits, current = [2, 6, 5, 3], [], [], "x"
    for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        w = rng.normal(size=(n_out, n_in)).astype(np.float32)
        inits += [numpy_helper.from_array(w if w_first else w.T.copy(), f"W{k}"),
                  numpy_helper.from_array(rng.normal(size=n_out).astype(np.float32), f"B{k}")]
        nodes += [helper.make_node("MatMul", [f"W{k}", current] if w_first else [current, f"W{k}"], [f"M{k}"]),
                  helper.make_node("Add", [f"M{k}", f"B{k}"], [f"H{k}"]),
                  helper.make_node("Relu", [f"H{k}"], [f"R{k}"])]
        current = f"R{k}"
    graph = helper.make_graph(nodes, "unbatched", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, [3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("w_first", [True, False])
def test_unbatched_chains_ending_in_relu_are_read_and_decided_as_sampling_says(tmp_path, seed, w_first):
    """The chain computes onnxruntime's outputs; on thresholds just below and just above the minimum of Y_0
    over [-1, 1]^2 found by a dense grid, the fast path proves the first and falsifies the second."""
    _unbatched(tmp_path / "m.onnx", seed, w_first)
    chain, runtime = fastpath.read_chain(tmp_path / "m.onnx"), OnnxRuntimeModel(tmp_path / "m.onnx")
    assert chain.input_shape == (2,) and np.array_equal(chain.weights[-1], np.eye(3, dtype=np.float32))
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 301, dtype=np.float32)] * 2), -1).reshape(-1, 2)
    y = runtime(grid).astype(np.float64)
    assert np.allclose(chain.forward(grid)[0], y, rtol=1e-5, atol=1e-5)
    lowest = y[:, 0].min()
    for threshold, expected in ((lowest - 0.05, "verified"), (lowest + 0.05, "falsified")):
        lines = [f"(declare-const X_{i} Real)" for i in range(2)] + [f"(declare-const Y_{j} Real)" for j in range(3)]
        lines += [f"(assert (>= X_{i} -1))\n(assert (<= X_{i} 1))" for i in range(2)]
        (tmp_path / "p.vnnlib").write_text("\n".join(lines + [f"(assert (<= Y_0 {threshold:.6f}))"]) + "\n")
        result, details = fastpath.try_vnnlib(tmp_path / "m.onnx", read_vnnlib(tmp_path / "p.vnnlib"),
                                              Deadline(math.inf), budget=math.inf)
        assert result is not None and result.verdict.value == expected, (threshold, details)
        if expected == "falsified":
            assert runtime.run_flat(result.counterexample.inputs)[0] <= threshold


def test_a_matrix_times_a_batched_input_is_not_a_chain(tmp_path):
    """``MatMul(W, x)`` is W x only for a vector: on a (1, n) input it is another product, left to the engine."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 1), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["W", "x"], ["y"])], "wx",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "wx.onnx")
    with pytest.raises(fastpath.NotAChain):
        fastpath.read_chain(tmp_path / "wx.onnx")


def test_a_proof_needs_onnxruntime_to_agree_with_the_weights_read(tmp_path):
    """The fast path proves things about the chain it read; before it says so, onnxruntime runs the file at the
    boxes' centres and corners and must agree. A chain that differs (one weight moved) is refused."""
    save_onnx(random_network(2, 6, (4,), seed=1, outputs=3), tmp_path / "m.onnx")
    (tmp_path / "p.vnnlib").write_text(_box_property(4, 3))
    chain, runtime = fastpath.read_chain(tmp_path / "m.onnx"), OnnxRuntimeModel(tmp_path / "m.onnx")
    prop = read_vnnlib(tmp_path / "p.vnnlib")
    assert fastpath._agrees_with_runtime(chain, runtime, prop)
    weights = list(chain.weights)
    weights[1] = weights[1].copy()
    weights[1][0, 0] += 0.01
    moved = fastpath.Chain(tuple(weights), chain.biases, chain.input_shape)
    assert not fastpath._agrees_with_runtime(moved, runtime, prop)
