"""A user's own model and data, end to end: a small table, a torch MLP trained on it and exported to ONNX, then
`certify` on .npz and .csv, `prune` on .npz, and the same through the Python API with arrays and a DataLoader.

The table is generated here (two Gaussian classes in 4 features, seeded) and written as a user would."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import certprune
from certprune.cli.main import main
from tests.conftest import one_error_line


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """(folder, x, y): a trained 4-16-16-2 MLP as model.onnx, the table as mine.npz and mine.csv."""
    folder = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = np.clip(rng.normal(0.0, 0.6, (400, 4)) + np.where(y[:, None] == 1, 1.0, -1.0), -3, 3).astype(np.float32)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    optimiser = torch.optim.Adam(module.parameters(), lr=0.02)
    for _ in range(150):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        optimiser.step()
    network = certprune.from_torch(module.eval(), (4,))
    certprune.save_onnx(network, folder / "model.onnx")
    np.savez(folder / "mine.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:],
             lower=-3.0, upper=3.0)
    rows = ["f0,f1,f2,f3,y"] + [",".join(f"{v:.6g}" for v in row) + f",{label}" for row, label in zip(x[300:], y[300:])]
    (folder / "mine.csv").write_text("\n".join(rows) + "\n")
    (folder / "mine.domain.json").write_text(json.dumps({"lower": -3.0, "upper": 3.0}))
    return folder, x, y


def test_certify_on_npz_and_csv_agree(user, tmp_path):
    folder, _, _ = user
    reports = []
    for data, extra in (("mine.npz", []), ("mine.csv", ["--label", "y"])):
        out = tmp_path / f"{data}.json"
        code = main(["certify", str(folder / "model.onnx"), "--data", str(folder / data), *extra, "--eps", "0.05",
                     "-n", "20", "--timeout", "10", "--json", str(out), "--quiet"])
        assert code == 0
        reports.append(json.loads(out.read_text())["totals"])
    assert reports[0] == reports[1] and reports[0]["samples"] == 20 and reports[0]["verified"] >= 15


def test_prune_on_the_users_npz(user, tmp_path, capsys):
    folder, _, _ = user
    out = tmp_path / "pruned.onnx"
    code = main(["prune", str(folder / "model.onnx"), "--method", "stability", "--sparsity", "0.5",
                 "--data", str(folder / "mine.npz"), "--eps", "0.05", "-o", str(out)])
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "parameters" in printed and "test accuracy" in printed
    pruned = certprune.load_onnx(out)
    assert pruned.relu_count < certprune.load_onnx(folder / "model.onnx").relu_count
    # the data's domain is recorded, so that inspect checks parity where the data lives
    assert (pruned.metadata["certprune.input_lower"], pruned.metadata["certprune.input_upper"]) == ("-3.0", "3.0")
    hint = printed[printed.index("certprune certify"):].split(")")[0].split()  # runs as printed, on the same data
    assert hint[hint.index("--data") + 1] == str(folder / "mine.npz")
    assert main(hint[1:] + ["-n", "3", "--timeout", "5", "--quiet"]) == 0


def test_python_api_with_arrays_and_a_data_loader(user):
    folder, x, y = user
    network = certprune.load_onnx(folder / "model.onnx")
    report = certprune.certify(network, x[300:320], y[300:320], eps=0.05, lower=-3.0, upper=3.0, timeout=10)
    assert report.totals()["samples"] == 20 and report.totals()["verified"] >= 15
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x[300:320]),
                                                                         torch.from_numpy(y[300:320])), batch_size=7)
    from_loader = certprune.certify(network, batches, eps=0.05, lower=-3.0, upper=3.0, timeout=10)  # as the README
    assert [(r["index"], r["status"]) for r in from_loader.records] == \
        [(r["index"], r["status"]) for r in report.records]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x[:300]),
                                                                        torch.from_numpy(y[:300])), batch_size=64)
    result = certprune.prune(network, "magnitude", 0.5, loader, eval_data=(x[300:], y[300:]))
    assert result.after.parameters < result.before.parameters and result.after.accuracy > 0.8



def test_a_model_ending_in_softmax_is_refused_by_certify_as_the_readme_says(user, tmp_path, capsys):
    """Its decision is taken on float32 probabilities, which can tie where the logits differ."""
    import onnx
    from onnx import helper

    folder, x, y = user
    model = onnx.load(str(folder / "model.onnx"))
    logits = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=-1))
    model.graph.output[0].name = "probabilities"
    onnx.save(model, str(tmp_path / "softmax.onnx"))
    np.savez(tmp_path / "d.npz", x=x[:3], y=y[:3], lower=-3, upper=3)
    code = main(["certify", str(tmp_path / "softmax.onnx"), "--data", str(tmp_path / "d.npz"), "--eps", "0.1"])
    assert code == 2 and "the model ends in a softmax" in one_error_line(capsys)


def test_data_that_does_not_fit_the_model_is_one_line(user, tmp_path, capsys):
    folder, x, _ = user
    np.savez(tmp_path / "wide.npz", x=np.zeros((3, 5)), y=[0, 1, 0], lower=0, upper=1)
    code = main(["certify", str(folder / "model.onnx"), "--data", str(tmp_path / "wide.npz"), "--eps", "0.1"])
    assert code == 2 and "takes inputs of shape (4,), the data has 5 values" in one_error_line(capsys)
    np.savez(tmp_path / "labels.npz", x=x[:3], y=[0, 1, 7], lower=-3, upper=3)
    code = main(["certify", str(folder / "model.onnx"), "--data", str(tmp_path / "labels.npz"), "--eps", "0.1"])
    assert code == 2 and "label 7, but the model decides 2 classes" in one_error_line(capsys)
    code = main(["certify", str(folder / "model.onnx"), "--data", "mnist", "--label", "y", "--eps", "0.1"])
    assert code == 2 and "apply to data files" in one_error_line(capsys)


def test_a_gate_on_the_users_data(user, tmp_path):
    folder, _, _ = user
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""model: {folder / 'model.onnx'}
checks:
  - name: robust
    certify: {{data: {folder / 'mine.csv'}, label: y, eps: 0.05, samples: 10, timeout: 10}}
    require: {{certified_accuracy: ">= 0.7"}}
  - name: facts
    facts: {{data: {folder / 'mine.npz'}, samples: 100}}
    require: {{clean_accuracy: ">= 0.8", parity: true}}
""")
    out = tmp_path / "gate.json"
    assert main(["gate", str(policy), "--json", str(out), "--cache", str(tmp_path / "cache"), "--quiet"]) == 0
    checks = json.loads(out.read_text())["checks"]
    assert checks[0]["figures"]["per_eps"]["0.05"]["samples"] == 10 and checks[1]["figures"]["clean_accuracy"] > 0.8


def test_a_journal_resumes_with_the_same_data_under_another_name(user, tmp_path, capsys):
    """The README says paths do not count: a copied or moved data file resumes its journal."""
    folder, _, _ = user
    (tmp_path / "copy.csv").write_text((folder / "mine.csv").read_text())
    (tmp_path / "copy.domain.json").write_text((folder / "mine.domain.json").read_text())
    common = [str(folder / "model.onnx"), "--eps", "0.1", "-n", "5", "--label", "y", "--quiet",
              "--journal", str(tmp_path / "j.jsonl")]
    assert main(["certify", "--data", str(folder / "mine.csv"), *common]) == 0
    assert main(["certify", "--data", str(tmp_path / "copy.csv"), *common, "--resume"]) == 0
    assert "does not fit" not in capsys.readouterr().err


def test_prune_reads_flat_rows_for_an_image_model_as_certify_does(tmp_path, capsys):
    """A (1, 8, 8) model with a table of 64 columns per sample: certify reshapes the rows, and prune too."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 16), nn.ReLU(), nn.Linear(16, 2))
    certprune.save_onnx(certprune.from_torch(module.eval(), (1, 8, 8)), tmp_path / "conv.onnx")
    rng = np.random.default_rng(1)
    x = rng.random((60, 64)).astype(np.float32)
    np.savez(tmp_path / "flat.npz", x=x, y=(x[:, 0] > 0.5).astype(np.int64), lower=0.0, upper=1.0)
    args = [str(tmp_path / "conv.onnx"), "--data", str(tmp_path / "flat.npz"), "--eps", "0.01"]
    assert main(["certify", *args, "-n", "2", "--timeout", "5", "--quiet"]) in (0, 10, 20)
    assert main(["prune", *args, "--method", "magnitude", "--sparsity", "0.5", "-o", str(tmp_path / "p.onnx")]) == 0
    assert certprune.load_onnx(tmp_path / "p.onnx").input_shape == (1, 8, 8)


def test_files_of_another_kind_are_named_as_such(tmp_path, capsys):
    """A .tsv given as --data, an .npz given to fairness-template, a robustness YAML as a gate property, and a
    model with an unsupported operator (its file named: a gate reads a baseline too)."""
    from tests.conftest import MODELS, one_error_line

    (tmp_path / "t.tsv").write_text("a\tb\ty\n1\t2\t0\n")
    assert main(["certify", str(MODELS / "german_small.onnx"), "--data", str(tmp_path / "t.tsv"), "--label", "y",
                 "--eps", "0.1"]) == 2
    assert "t.tsv: data files are .npz, .csv or .parquet" in one_error_line(capsys)
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2)), y=np.zeros(2))
    assert main(["fairness-template", str(tmp_path / "d.npz"), "--protected", "a", "-o", str(tmp_path / "p.yaml")]) == 2
    assert "reads a .csv or .parquet table" in one_error_line(capsys)
    (tmp_path / "rob.yaml").write_text("kind: robustness\neps: 0.1\npoints:\n  - {x: [0.5], label: 0}\n")
    (tmp_path / "policy.yaml").write_text(f"model: {MODELS / 'german_small.onnx'}\nchecks:\n  - name: r\n"
                                          f"    property: {tmp_path / 'rob.yaml'}\n    require: {{holds: true}}\n")
    assert main(["gate", str(tmp_path / "policy.yaml"), "--no-cache", "--quiet"]) == 2
    message = one_error_line(capsys)
    assert "rob.yaml is a robustness property: a gate measures robustness with a certify check" in message
