"""Running the original ONNX model with onnxruntime: the referee for parity and counterexample replay."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from certprune.errors import ModelError


class OnnxRuntimeModel:
    """The original model file executed by onnxruntime, for any batch size.

    Models with a fixed batch dimension are run in batches of that size (the VNN-COMP ACAS Xu files, batch 1:
    one row at a time; torch.onnx.export without dynamic axes fixes the example's batch, e.g. 32).
    """

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelError(f"onnxruntime cannot load {path}: {str(error).splitlines()[0]}") from error
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.fixed_batch = graph_input.shape[0] if isinstance(graph_input.shape[0], int) else None
        self.unbatched = len(graph_input.shape) == 1  # one vector, no batch dimension
        self.output_name = self.session.get_outputs()[0].name
        per_sample = graph_input.shape if self.unbatched else graph_input.shape[1:]
        self.sample_shape = tuple(per_sample) if all(isinstance(d, int) for d in per_sample) else (-1,)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Raw model outputs (including any final Sigmoid/Softmax) for a batch ``x``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.unbatched:
            rows = [self.session.run([self.output_name], {self.input_name: x[i].reshape(-1)})[0] for i in range(len(x))]
            return np.stack(rows).reshape(len(x), -1)
        if self.fixed_batch is None or self.fixed_batch == len(x):
            return self.session.run([self.output_name], {self.input_name: x})[0].reshape(len(x), -1)
        size, rows = self.fixed_batch, []
        for start in range(0, len(x), size):  # batches of the declared size, the last one padded with its last row
            chunk = x[start:start + size]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
            rows.append(self.session.run([self.output_name], {self.input_name: padded})[0][:len(chunk)])
        return np.concatenate(rows).reshape(len(x), -1)

    def run_flat(self, x: np.ndarray) -> np.ndarray:
        """The flat outputs at one input given as a flat vector (reshaped as the graph's input declares)."""
        x = np.asarray(x, dtype=np.float32).reshape(self.sample_shape)
        return self(x[None])[0]
