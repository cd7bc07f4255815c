"""certprune: make ReLU networks smaller and provably trustworthy. The public API, stated once."""
from certprune.errors import CertpruneError, ModelError, PropertyError, UnsupportedLayerError
from certprune.network import Affine, Conv2d, Dense, Flatten, Network, ReLU
from certprune.onnx_io import load_onnx, save_onnx, to_onnx
from certprune.parity import check_parity
from certprune.torch_io import from_torch
from certprune.types import Box, Certificate, Counterexample, Result, Verdict

__all__ = [
    "Affine", "Box", "CertpruneError", "Certificate", "Conv2d", "Counterexample", "Dense", "Flatten",
    "ModelError", "Network", "PropertyError", "ReLU", "Result", "UnsupportedLayerError", "Verdict",
    "check_parity", "from_torch", "load_onnx", "save_onnx", "to_onnx",
]
