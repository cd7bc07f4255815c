"""Small fairness problems for the tests: random dense nets on tiny integer domains, and brute force."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch

from certprune.fairness.partition import Partition, Partitioning
from certprune.fairness.problem import FairnessProblem, FairnessSettings
from certprune.fairness.replay import Referee
from certprune.fairness.cases import DecisionRule
from certprune.network import Dense, Network, ReLU
from certprune.onnx_io import save_onnx
from certprune.runtime import OnnxRuntimeModel
from certprune.spec.fairness import FairnessProperty, parse_fairness

RANGES = (("a", 0, 3), ("b", -2, 2), ("c", 0, 4), ("sex", 0, 1))


def random_net(n_inputs: int, seed: int, *, protected: tuple[int, ...] = (), scale: float = 1.0, width: int = 5,
               depth: int = 2, outputs: int = 1, transform: str | None = None) -> Network:
    """He-initialised dense ReLU net; the first-layer columns of ``protected`` inputs scaled by ``scale``."""
    gen = torch.Generator().manual_seed(seed)
    layers, size = [], n_inputs
    for _ in range(depth):
        W = torch.randn(width, size, generator=gen) * math.sqrt(2.0 / size)
        layers += [Dense(W, 0.5 * torch.randn(width, generator=gen)), ReLU()]
        size = width
    layers.append(Dense(torch.randn(outputs, size, generator=gen) * math.sqrt(2.0 / size),
                        0.3 * torch.randn(outputs, generator=gen)))
    first = layers[0]
    W = first.weight.clone()
    for i in protected:
        W[:, i] *= scale
    layers[0] = Dense(W, first.bias)
    return Network(tuple(layers), (n_inputs,), transform)


def property_text(ranges=RANGES, protected="[sex]", relaxed: str | None = None, partition: str | None = None,
                  decision: str | None = None, engine: str = "auto", timeout: float = 20) -> str:
    lines = ["kind: fairness", "attributes:"]
    lines += [f"  - {{name: {n}, type: int, range: [{lo}, {hi}]}}" for n, lo, hi in ranges]
    lines.append(f"protected: {protected}")
    if relaxed:
        lines.append(f"relaxed: {relaxed}")
    if partition:
        lines.append(f"partition: {partition}")
    if decision:
        lines.append(f"decision: {decision}")
    lines += [f"engine: {engine}", f"timeout: {{partition: {timeout}}}"]
    return "\n".join(lines) + "\n"


def setup(tmp_path: Path, network: Network, text: str, name: str = "net", **settings):
    """(problem, referee, partitioning) with the network saved as ONNX and the property parsed."""
    path = tmp_path / f"{name}.onnx"
    save_onnx(network, path)
    prop = parse_fairness(text, f"{name}.yaml")
    problem = FairnessProblem.create(network, prop, FairnessSettings(**settings), path)
    return problem, Referee(problem), Partitioning(prop)


def brute_force(onnx_path, prop: FairnessProperty, partition: Partition, n_outputs: int = 1,
                transform: str | None = None) -> bool:
    """Whether some allowed pair with x in the partition gets different decisions on the ONNX model."""
    model = OnnxRuntimeModel(onnx_path)
    rule = DecisionRule(prop.decision, n_outputs, transform)
    axes = []
    for a, lo, hi in zip(prop.attributes, partition.lower, partition.upper):
        values = prop.protected.get(a.name)
        axes.append([v for v in values if lo <= v <= hi] if values else list(range(int(lo), int(hi) + 1)))
    xs = np.array(list(itertools.product(*axes)), dtype=np.float64)
    decision_of = {}
    out = rule.decide_outputs(model(xs.astype(np.float32)))
    for x, d in zip(map(tuple, xs), out):
        decision_of[x] = d
    names = prop.names
    relaxed = [(names.index(n), t) for n, t in prop.relaxed.items()]
    prot = [names.index(n) for n in prop.protected]
    partners = _partners(prop, prot, relaxed)
    for x in xs:
        for change in partners:
            y = x.copy()
            for i, v in change["protected"]:
                y[i] = v
            if np.array_equal(y[prot], x[prot]):
                continue
            for offsets in change["relaxed"]:
                z = y.copy()
                ok = True
                for (i, _), d in zip(relaxed, offsets):
                    z[i] += d
                    a = prop.attributes[i]
                    ok &= a.lower <= z[i] <= a.upper
                if not ok:
                    continue
                key = tuple(z)
                if key not in decision_of:
                    decision_of[key] = rule.decide_outputs(model(z[None].astype(np.float32)))[0]
                if decision_of[key] != decision_of[tuple(x)]:
                    return True
    return False


def _partners(prop, prot, relaxed):
    values = [prop.protected[prop.names[i]] for i in prot]
    offsets = list(itertools.product(*[range(-int(t), int(t) + 1) for _, t in relaxed]))
    return [{"protected": list(zip(prot, combo)), "relaxed": offsets} for combo in itertools.product(*values)]
