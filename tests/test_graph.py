"""Networks that branch and join: the wiring's checks, graph surgery, ONNX both ways, and a small ResNet
exported by torch that loads, verifies and prunes."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from certprune import load_onnx
from certprune.cli.main import main
from certprune.errors import ModelError
from certprune.network import INPUT, Add, Affine, Dense, Network, ReLU
from certprune.onnx_io import save_onnx
from certprune.parity import check_parity
from certprune.prune import mask_units, prunable_layers, remove_units
from tests.netgen import random_graph


def test_a_unit_that_fans_out_is_removed_from_every_reader():
    # x -> dense(4) -> relu -> {dense A, dense B} -> add -> relu -> dense
    layers = (_dense(4, 3, 1), ReLU(), _dense(3, 4, 2), _dense(3, 4, 3), Add(), ReLU(), _dense(2, 3, 4))
    network = Network(layers, (3,), inputs=((INPUT,), (0,), (1,), (1,), (2, 3), (4,), (5,)))
    info = prunable_layers(network)[0]
    assert info.consumers == (2, 3)
    remove = [torch.tensor([True, False, False, True])]
    fill = [torch.tensor([0.5, 0.0, 0.0, -0.25])]
    smaller = remove_units(network, remove, fill)
    assert smaller.layers[0].weight.shape == (2, 3)
    assert smaller.layers[2].weight.shape == (3, 2) and smaller.layers[3].weight.shape == (3, 2)
    x = torch.randn(16, 3)
    assert torch.allclose(smaller(x), mask_units(network, remove, fill)(x), atol=1e-5)


def _dense(n_out, n_in, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Dense(torch.randn(n_out, n_in, generator=gen), torch.randn(n_out, generator=gen))


def test_a_chain_is_the_default_wiring():
    network = Network((_dense(4, 3), ReLU(), _dense(2, 4)), (3,))
    assert network.is_chain and network.inputs == ((INPUT,), (0,), (1,))


@pytest.mark.parametrize("wiring,message", [
    (((INPUT,), (0,), (0,)), "output of layer 1"),          # ReLU's output unused
    (((INPUT,), (2,), (1,)), "not an earlier layer"),        # reads a later layer
    (((INPUT,), (0, 0), (1,)), "reads 2 values, expected 1"),  # ReLU with two inputs
])
def test_bad_wiring_is_a_model_error(wiring, message):
    with pytest.raises(ModelError, match=message):
        Network((_dense(4, 3), ReLU(), _dense(2, 4)), (3,), inputs=wiring)


def test_residual_join_and_surgery_keep_the_function():
    # x -> dense -> relu -> dense -> add(x) -> relu -> dense
    layers = (_dense(3, 3, 1), ReLU(), _dense(3, 3, 2), Add(), ReLU(), _dense(2, 3, 3))
    network = Network(layers, (3,), inputs=((INPUT,), (0,), (1,), (INPUT, 2), (3,), (4,)))
    x = torch.randn(8, 3)
    expected = layers[5].forward(torch.relu(x + layers[2].forward(torch.relu(layers[0].forward(x)))))
    assert torch.allclose(network(x), expected)
    inserted = network.insert_after(3, Affine(torch.ones(3), torch.zeros(3)))
    assert inserted.inputs[4] == (3,) and inserted.inputs[5] == (4,)
    assert torch.allclose(inserted(x), expected)
    assert torch.allclose(inserted.remove_layer(4)(x), expected)
    # only the units inside the block are prunable: the residual stream joins another branch
    (info,) = prunable_layers(network)
    assert (info.producer, info.relu, info.consumers) == (0, 1, (2,))
    smaller = remove_units(network, [torch.tensor([False, True, False])])
    assert smaller.layers[0].weight.shape == (2, 3) and smaller.layers[2].weight.shape == (3, 2)


@pytest.mark.parametrize("kind,seed", [("conv", s) for s in range(4)] + [("dense", s) for s in range(2)])
def test_graph_round_trips_through_onnx(tmp_path, kind, seed):
    network = random_graph(seed, kind=kind)
    path = tmp_path / "graph.onnx"
    save_onnx(network, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, *network.input_shape)
    ours = network(x).detach().numpy()
    theirs = session.run(None, {network.input_name: x.numpy()})[0]
    assert np.allclose(ours, theirs, atol=1e-5)
    loaded = load_onnx(path)
    assert [layer.kind for layer in loaded.layers] == [layer.kind for layer in network.layers]
    assert loaded.inputs == network.inputs
    assert check_parity(loaded, path).ok


class _Block(nn.Module):
    """torchvision's BasicBlock: conv-BN-ReLU-conv-BN plus the input (or a 1x1 conv-BN of it), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class _ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.MaxPool2d(2, 2))
        self.blocks = nn.Sequential(_Block(4, 4, 1), _Block(4, 6, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def _resnet(tmp_path, dynamo: bool):
    torch.manual_seed(0)
    model = _ResNet()
    for m in model.modules():  # BatchNorm statistics as after training, so folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    with torch.no_grad():  # decisions that vary over the input domain
        model.fc.weight.mul_(20.0)
        model.fc.bias.zero_()
    model.eval()
    path = tmp_path / "resnet.onnx"
    torch.onnx.export(model, (torch.zeros(1, 1, 12, 12),), str(path), dynamo=dynamo, input_names=["input"],
                      output_names=["output"], dynamic_axes=None if dynamo else {"input": {0: "batch"}})
    return model, path


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_torch_resnet_loads_verifies_and_prunes(tmp_path, dynamo, capsys):
    model, path = _resnet(tmp_path, dynamo)
    network = load_onnx(path)
    kinds = [layer.kind for layer in network.layers]
    assert kinds.count("add") == 2 and "maxpool" in kinds and not network.is_chain
    assert "affine" not in kinds  # every BatchNorm folded into its convolution
    assert check_parity(network, path, samples=32).ok
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(network(x), model(x), atol=1e-5)
        label = int(model(x).argmax())

    def vnnlib(eps: float) -> str:
        lines = [f"(declare-const X_{i} Real)" for i in range(144)] + [f"(declare-const Y_{j} Real)" for j in range(3)]
        for i, v in enumerate(x.flatten().tolist()):
            lines += [f"(assert (>= X_{i} {max(v - eps, 0.0)!r}))", f"(assert (<= X_{i} {min(v + eps, 1.0)!r}))"]
        others = [j for j in range(3) if j != label]
        lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in others) + "))")
        path = tmp_path / f"robust_{eps}.vnnlib"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    assert main(["verify", str(path), "--property", vnnlib(1e-4), "--timeout", "60", "--quiet"]) == 0
    assert main(["verify", str(path), "--property", vnnlib(1.0), "--timeout", "60", "--quiet"]) == 10
    capsys.readouterr()

    # pruning: the channels inside each block are units (the stem's and the blocks' outputs form residual
    # streams that join, kept); the smaller model still matches onnxruntime
    infos = prunable_layers(network)
    assert len(infos) == 2
    masks = [torch.arange(info.size) % 2 == 1 for info in infos]
    smaller = remove_units(network, masks)
    assert smaller.parameter_count < network.parameter_count
    pruned_path = tmp_path / "pruned.onnx"
    save_onnx(smaller, pruned_path)
    assert check_parity(load_onnx(pruned_path), pruned_path, samples=32).ok

    data = tmp_path / "data.npz"
    xs = torch.rand(64, 1, 12, 12)
    with torch.no_grad():
        np.savez(data, x=xs.numpy(), y=model(xs).argmax(1).numpy())
    out = tmp_path / "cli_pruned.onnx"
    assert main(["prune", str(path), "--method", "magnitude", "--sparsity", "0.3", "--data", str(data),
                 "--range", "0", "1", "-o", str(out)]) == 0
    assert load_onnx(out).parameter_count < network.parameter_count
