"""One fairness question bound to one model: the twin, the cases, boxes over twin inputs, and replay.

Boxes live in the twin's input space ``z`` (see twin.py). Per partition there is one *row* per compared
pair of protected values (ordered pairs when some attribute is relaxed; unordered otherwise, since then the
swapped pair lies in the same partition and the cases cover both orders). A row's box fixes ``p`` and
``p'``, gives the shared attributes their partition ranges and each relaxed offset ``delta`` its tolerance.

Soundness margin: logits are evaluated in float32 by the model's runtime, while bounds, MILP and Z3 reason
about the exact twin. A case is ruled out only when a sound upper bound of a row clears zero by
``|G| @ E + margin_rel * (|G| @ 1 + |g0|)``, where ``E`` bounds how far a float32 evaluation of each logit
can stray from the exact value over the box: an a-posteriori bound computed on each box where the search
works, from the magnitudes of that box's activations (``bounds/floaterror.py``), so it shrinks with the box.
A model ending in a sigmoid adds the logit distance that keeps float32 sigmoid(logit) off sigmoid(t).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from certprune.bounds import CROWN, IBP, AlphaCROWN
from certprune.fairness.cases import CaseTable, DecisionRule
from certprune.bounds.floaterror import Rounding, float32_error, graph_matches
from certprune.fairness.partition import Partition
from certprune.fairness.twin import TwinLayout, build_twin
from certprune.network import Dense, Network
from certprune.spec.fairness import FairnessProperty

ENGINES = ("auto", "z3")
BOUND_METHODS = {"ibp": IBP, "crown": CROWN, "alpha": AlphaCROWN}


@dataclass(frozen=True, kw_only=True)
class FairnessSettings:
    """How partitions are decided; one frozen value passed to every worker.

    ``bounds``: bound methods run in order (names from ``ibp``, ``crown``, ``alpha``); the Fairify-style
    baseline is ``engine="z3", bounds=("ibp",)``. ``prune``: drop stable neurons before SMT (results must
    not change). ``milp_unstable``: leaves with at most this many unstable twin neurons go to the MILP.
    """

    engine: str = "auto"
    bounds: tuple[str, ...] = ("ibp", "crown")
    prune: bool = True
    margin_rel: float = 2.0**-15
    samples: int = 256
    attack_steps: int = 40
    attack_restarts: int = 16
    batch: int = 64
    milp_unstable: int = 40
    z3_fallback: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        unknown = set(self.bounds) - {"ibp", "crown", "alpha"}
        if unknown or not self.bounds:
            raise ValueError(f"bounds must name some of ibp, crown, alpha; got {self.bounds}")

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True, eq=False)
class FairnessProblem:
    """The property, the model (float32) and everything derived from them once per process."""

    prop: FairnessProperty
    network: Network
    layout: TwinLayout
    twin: Network
    twin64: Network
    rule: DecisionRule
    table: CaseTable
    settings: FairnessSettings
    onnx_path: str | None = None
    integer: np.ndarray = field(default=None)  # per twin input: integer-valued
    sensitivity: np.ndarray = field(default=None)  # per twin input: sum |first-layer weights|
    rounding: Rounding = field(default=Rounding(exact_graph=False))  # exact_graph: the ONNX file is the network

    @classmethod
    def create(cls, network: Network, prop: FairnessProperty, settings: FairnessSettings,
               onnx_path: str | Path | None = None) -> "FairnessProblem":
        n_out = int(np.prod(network.output_shape))
        prop.check_model(int(np.prod(network.input_shape)), n_out, network.output_transform)
        rule = DecisionRule(prop.decision, n_out, network.output_transform)
        layout = TwinLayout.of(prop)
        twin = build_twin(network.to(torch.float32), layout, rule.outputs)
        integer = np.array([prop.attributes[i].integer for i in _slot_attributes(layout)])
        first = next(layer for layer in twin.layers if isinstance(layer, Dense))
        sensitivity = first.weight.abs().sum(dim=0).double().numpy()
        exact = onnx_path is not None and graph_matches(str(onnx_path), network)
        return cls(prop, network, layout, twin, twin.to(torch.float64), rule, CaseTable.build(rule), settings,
                   None if onnx_path is None else str(onnx_path), integer, sensitivity, Rounding(exact_graph=exact))

    # -- boxes over twin inputs ------------------------------------------------------------------------

    def pairs(self) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
        """Compared protected value pairs (v, v'), v != v'."""
        combos = list(itertools.product(*self.prop.protected.values()))
        ordered = bool(self.prop.relaxed)
        return [(a, b) for a in combos for b in combos if a != b and (ordered or a < b)]

    def rows(self, partition: Partition) -> tuple[np.ndarray, np.ndarray]:
        """(R, size) lower and upper twin boxes of a partition, one per compared pair."""
        lay = self.layout
        lo, hi = np.zeros(lay.size), np.zeros(lay.size)
        for slot, i in enumerate(lay.shared):
            lo[slot], hi[slot] = partition.lower[i], partition.upper[i]
        for k, t in enumerate(lay.tolerance):
            lo[lay.delta_slot + k], hi[lay.delta_slot + k] = -t, t
        lowers, uppers = [], []
        for v1, v2 in self.pairs():
            if not all(partition.lower[i] <= v <= partition.upper[i] for i, v in zip(lay.protected, v1)):
                continue
            a, b = lo.copy(), hi.copy()
            a[lay.p_slot(0):lay.p_slot(0) + len(v1)] = b[lay.p_slot(0):lay.p_slot(0) + len(v1)] = v1
            a[lay.p_slot(1):lay.p_slot(1) + len(v2)] = b[lay.p_slot(1):lay.p_slot(1) + len(v2)] = v2
            a, b = self.tighten(a, b)
            lowers.append(a)
            uppers.append(b)
        return np.array(lowers).reshape(-1, lay.size), np.array(uppers).reshape(-1, lay.size)

    def hull(self, partition: Partition) -> tuple[np.ndarray, np.ndarray]:
        """One twin box holding every row of the partition (protected slots span their values)."""
        lo, hi = self.rows(partition)
        return lo.min(axis=0), hi.max(axis=0)

    def domain(self, attribute: int) -> tuple[float, float]:
        a = self.prop.attributes[attribute]
        return a.lower, a.upper

    def tighten(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shrink relaxed slots so that copy 2's value r + delta can stay in the attribute's range."""
        lo, hi = lo.copy(), hi.copy()
        for k, i in enumerate(self.layout.relaxed):
            r, d = self.layout.shared_slot(i), self.layout.delta_slot + k
            d_lo, d_hi = self.domain(i)
            lo[d], hi[d] = max(lo[d], d_lo - hi[r]), min(hi[d], d_hi - lo[r])
            lo[r], hi[r] = max(lo[r], d_lo - hi[d]), min(hi[r], d_hi - lo[d])
        return lo, hi

    def straddles(self, lo: np.ndarray, hi: np.ndarray) -> list[int]:
        """Relaxed attributes whose copy-2 value r + delta can leave the range inside this box."""
        out = []
        for k, i in enumerate(self.layout.relaxed):
            r, d = self.layout.shared_slot(i), self.layout.delta_slot + k
            d_lo, d_hi = self.domain(i)
            if lo[r] + lo[d] < d_lo or hi[r] + hi[d] > d_hi:
                out.append(k)
        return out

    def valid_pair(self, z: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
        """Whether a twin input is an allowed pair inside the box (integers integral, x' in range)."""
        if np.any(z < lo) or np.any(z > hi) or np.any(z[self.integer] != np.round(z[self.integer])):
            return False
        lay = self.layout
        p1 = z[lay.p_slot(0):lay.p_slot(0) + len(lay.protected)]
        p2 = z[lay.p_slot(1):lay.p_slot(1) + len(lay.protected)]
        values = list(self.prop.protected.values())
        if np.array_equal(p1, p2) or not all(a in v and b in v for a, b, v in zip(p1, p2, values)):
            return False
        return not self.straddles(z, z)

    # -- margins -------------------------------------------------------------------------------------

    def float_error(self, lo: np.ndarray, hi: np.ndarray, bounds=None) -> np.ndarray:
        """(B, 2k) bound on how far the float32 model's logits can stray from the exact twin outputs on boxes;
        ``bounds`` (a Bounds of the same boxes) tightens the activations' magnitudes."""
        lower, upper = (torch.from_numpy(np.atleast_2d(v)).double() for v in (lo, hi))
        pre = list(zip(bounds.pre_lower, bounds.pre_upper)) if bounds is not None else None
        return float32_error(self.twin64, lower, upper, pre_bounds=pre, integer=torch.from_numpy(self.integer),
                             rounding=self.rounding).numpy()

    def margins(self, G: np.ndarray, g0: np.ndarray, error: np.ndarray) -> np.ndarray:
        """(B, rows) clearance needed by rows ``G @ Y + g0`` on boxes whose outputs have the given float error."""
        G = np.abs(G)
        own = self.settings.margin_rel * (G.sum(1) + np.abs(g0))  # the float64 rounding of the row itself
        return np.atleast_2d(error) @ G.T + own + self.rule.logit_slack * G.sum(1)

    # -- bounds --------------------------------------------------------------------------------------------

    def bounds(self, lo: np.ndarray, hi: np.ndarray, C=None, methods: tuple[str, ...] | None = None,
               prior=None) -> list:
        """(method name, Bounds) after each method in turn, each at least as tight as the one before,
        on the twin (float64: sound for the exact real-valued function) over boxes (B, size)."""
        lower = torch.from_numpy(np.atleast_2d(lo)).double()
        upper = torch.from_numpy(np.atleast_2d(hi)).double()
        out = []
        for name in methods or self.settings.bounds:
            prior = BOUND_METHODS[name]().compute(self.twin64, lower, upper, C, prior=prior)
            out.append((name, prior))
        return out

    # -- decoding --------------------------------------------------------------------------------------

    def named_pair(self, z: np.ndarray) -> tuple[dict, dict]:
        x1, x2 = self.layout.pair(z[None])
        names = self.prop.names
        return ({n: _plain(v) for n, v in zip(names, x1[0])}, {n: _plain(v) for n, v in zip(names, x2[0])})


def _slot_attributes(layout: TwinLayout) -> list[int]:
    """The model input each twin slot stands for."""
    return list(layout.shared) + list(layout.protected) * 2 + list(layout.relaxed)


def _plain(value: float):
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else float(value)


def integer_points(lo: np.ndarray, hi: np.ndarray, integer: np.ndarray, n: int,
                   generator: np.random.Generator) -> np.ndarray:
    """``n`` random points of a box, integer where ``integer`` says (uniform over the integers)."""
    u = generator.random((n, len(lo)))
    span = np.where(integer, np.floor(hi) - np.ceil(lo) + 1, hi - lo)
    points = np.where(integer, np.ceil(lo) + np.floor(u * span), lo + u * span)
    return np.minimum(np.maximum(points, lo), hi)


def box_size(lo: np.ndarray, hi: np.ndarray, integer: np.ndarray) -> float:
    """Integer points (times real lengths) of a twin box, for ordering and reporting."""
    span = np.where(integer, np.floor(hi) - np.ceil(lo) + 1, np.maximum(hi - lo, 1.0))
    return float(math.prod(span.tolist()))
