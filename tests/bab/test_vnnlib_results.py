"""`certprune verify` on a VNN-LIB band with fixed inputs that no float32 equals (the collins_rul_cnn shape):
sat, and a results file whose values are plain numbers that pass the competition's check (inputs within
1e-4 of the box, onnxruntime's outputs meeting the constraints)."""
from __future__ import annotations

import re

import numpy as np

from certprune.cli.main import main
from certprune.onnx_io import save_onnx
from certprune.runtime import OnnxRuntimeModel
from tests.bab.test_open_leaves import FIXED, peak_network


def vnnlib_text(lower, upper, lo: float, hi: float) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lower))] + ["(declare-const Y_0 Real)"]
    for i, (l, u) in enumerate(zip(lower.tolist(), upper.tolist())):
        lines += [f"(assert (>= X_{i} {l!r}))", f"(assert (<= X_{i} {u!r}))"]
    lines.append(f"(assert (or (and (>= Y_0 {lo!r}) (<= Y_0 {hi!r}))))")
    return "\n".join(lines) + "\n"


def test_results_file_holds_a_checkable_counterexample(tmp_path):
    save_onnx(peak_network(), tmp_path / "peak.onnx")
    lower = np.concatenate([[0.0, 0.0], FIXED])
    upper = np.concatenate([[1.0, 1.0], FIXED])
    (tmp_path / "band.vnnlib").write_text(vnnlib_text(lower, upper, 9.99, 50.0))
    results = tmp_path / "results.txt"
    code = main(["verify", str(tmp_path / "peak.onnx"), "--property", str(tmp_path / "band.vnnlib"),
                 "--timeout", "60", "--results-file", str(results)])
    text = results.read_text()
    assert code == 10 and text.split()[0] == "sat"
    pairs = dict(re.findall(r"\((X_\d+|Y_\d+) ([^()\s]+)\)", text))
    values = {name: float(value) for name, value in pairs.items()}  # plain numbers, no np.float64(...)
    x = np.array([values[f"X_{i}"] for i in range(6)])
    assert np.all(x >= lower - 1e-4) and np.all(x <= upper + 1e-4)
    y = OnnxRuntimeModel(tmp_path / "peak.onnx")(x.astype(np.float32)[None])[0, 0]
    assert 9.99 <= y <= 50.0 and abs(values["Y_0"] - y) <= 1e-6 * abs(y)
