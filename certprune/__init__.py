"""certprune: make ReLU networks smaller and provably trustworthy. The public API, stated once.

Names are imported on first use (PEP 562), so ``import certprune`` and the command line start without
loading torch, onnx or the solvers until a command needs them.
"""
from __future__ import annotations

import importlib
import sys
import types

from certprune.version import __version__

_WHERE = {
    "certify": "certprune.bab.certify:certify_data", "verify_vnnlib": "certprune.bab.instances",
    "SearchSettings": "certprune.bab.search", "verify_box": "certprune.bab.search",
    "CROWN": "certprune.bounds", "IBP": "certprune.bounds", "AlphaCROWN": "certprune.bounds",
    "Bounds": "certprune.bounds",
    "CertpruneError": "certprune.errors", "ModelError": "certprune.errors", "PropertyError": "certprune.errors",
    "UnsupportedLayerError": "certprune.errors",
    "FairnessSettings": "certprune.fairness.problem", "verify_fairness": "certprune.fairness.verify",
    "Affine": "certprune.network", "Conv2d": "certprune.network", "Dense": "certprune.network",
    "Flatten": "certprune.network", "Network": "certprune.network", "ReLU": "certprune.network",
    "load_onnx": "certprune.onnx_io", "save_onnx": "certprune.onnx_io", "to_onnx": "certprune.onnx_io",
    "check_parity": "certprune.parity",
    "PruneData": "certprune.prune", "load_data": "certprune.prune", "prune": "certprune.prune",
    "from_torch": "certprune.torch_io",
    "Box": "certprune.types", "Certificate": "certprune.types", "Counterexample": "certprune.types",
    "Result": "certprune.types", "Verdict": "certprune.types",
    "run_gate": "certprune.gate.run",
}

__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'certprune' has no attribute {name!r}")
    module, _, attribute = _WHERE[name].partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


class _Package(types.ModuleType):
    """Importing the subpackage ``certprune.prune`` must not hide the function ``certprune.prune``: the import
    system binds a loaded submodule as an attribute of its parent, which a public name of the same name wins."""

    def __setattr__(self, name: str, value) -> None:
        if name in _WHERE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
