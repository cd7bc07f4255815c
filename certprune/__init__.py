"""certprune: make ReLU networks smaller and provably trustworthy. The public API, stated once."""
from certprune.bab.certify import certify
from certprune.bab.instances import verify_vnnlib
from certprune.bab.search import SearchSettings, verify_box
from certprune.bounds import CROWN, IBP, AlphaCROWN, Bounds
from certprune.errors import CertpruneError, ModelError, PropertyError, UnsupportedLayerError
from certprune.fairness.problem import FairnessSettings
from certprune.fairness.verify import verify_fairness
from certprune.network import Affine, Conv2d, Dense, Flatten, Network, ReLU
from certprune.onnx_io import load_onnx, save_onnx, to_onnx
from certprune.parity import check_parity
from certprune.prune import PruneData, load_data, prune
from certprune.torch_io import from_torch
from certprune.types import Box, Certificate, Counterexample, Result, Verdict
from certprune.version import __version__

__all__ = [
    "CROWN", "IBP", "Affine", "AlphaCROWN", "Bounds", "Box", "CertpruneError", "Certificate", "Conv2d",
    "Counterexample", "Dense", "FairnessSettings", "Flatten", "ModelError", "Network", "PropertyError",
    "PruneData", "ReLU", "Result", "SearchSettings", "UnsupportedLayerError", "Verdict", "certify",
    "check_parity", "from_torch", "load_data", "load_onnx", "prune", "save_onnx", "to_onnx", "verify_box",
    "verify_fairness", "verify_vnnlib",
]
