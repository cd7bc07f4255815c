"""Certified accuracy on a single-logit model (decision: logit > 0) agrees with dense sampling."""
from __future__ import annotations

import numpy as np
import torch

from certprune.bab.certify import certify_one
from certprune.bab.search import SearchSettings
from certprune.onnx_io import save_onnx
from certprune.spec.robustness import RobustnessInstance
from tests.netgen import random_network


def test_single_logit_verdicts_match_sampling(tmp_path):
    disagreements = []
    for seed in range(12):
        network = random_network(2, 8, (3,), seed=seed, outputs=1)
        path = tmp_path / f"n{seed}.onnx"
        save_onnx(network, path)
        x = np.random.default_rng(seed).uniform(-1, 1, 3)
        with torch.no_grad():
            label = int(network(torch.as_tensor(x, dtype=torch.float32)[None])[0, 0] > 0)
        eps = 0.3
        sample = RobustnessInstance(seed, x, label, x - eps, x + eps, 10.0)
        record = certify_one(network, path, sample, SearchSettings(timeout=10.0))
        points = torch.as_tensor(np.random.default_rng(1).uniform(x - eps, x + eps, (20000, 3)), dtype=torch.float32)
        with torch.no_grad():
            flips = bool(((network(points)[:, 0] > 0).long() != label).any())
        if record["status"] == "verified" and flips:
            disagreements.append((seed, "verified but sampling flips the decision"))
        if record["status"] not in ("verified", "falsified"):
            disagreements.append((seed, record["status"]))
    assert not disagreements
