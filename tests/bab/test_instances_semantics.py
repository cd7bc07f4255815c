"""VNN-LIB properties are checked on logits, so models ending in a sigmoid or softmax are refused: float32
saturation makes outputs equal whose logits differ (sigmoid(30) == sigmoid(20) == 1)."""
from __future__ import annotations

import pytest
import torch

from certprune.bab.instances import verify_vnnlib
from certprune.errors import PropertyError
from certprune.network import Dense, Network
from certprune.onnx_io import save_onnx

PROPERTY = """(declare-const X_0 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 0.0))
(assert (<= X_0 1.0))
(assert (<= Y_0 Y_1))
"""


@pytest.mark.parametrize("transform", ["sigmoid", "softmax"])
def test_saturating_output_is_refused(tmp_path, transform):
    network = Network((Dense(torch.tensor([[1.0], [1.0]]), torch.tensor([30.0, 20.0])),), (1,), transform)
    save_onnx(network, tmp_path / "m.onnx")
    (tmp_path / "p.vnnlib").write_text(PROPERTY)
    with pytest.raises(PropertyError, match=f"ends in a {transform}"):
        verify_vnnlib(tmp_path / "m.onnx", tmp_path / "p.vnnlib")
