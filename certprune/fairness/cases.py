"""Decisions as linear constraints on logits, and the ways two copies' decisions can differ (cases).

A decision class ``c`` is a conjunction of rows ``a @ y + a0 >= 0`` (strict ``> 0`` where marked) over the
logits ``y`` the decision reads: ``threshold`` mode reads one logit, class 1 is ``y - t > 0`` and class 0 is
``t - y >= 0``; ``argmax`` mode reads all, class ``c`` is ``y_c - y_j > 0`` for ``j < c`` and ``>= 0`` for
``j > c`` (the first largest wins). The twin network outputs ``Y = [y (copy 1), y' (copy 2)]``; a *case*
``(c, d)``, ``c != d``, is "copy 1 decides c and copy 2 decides d", the conjunction of both classes' rows.
A pair of inputs is a counterexample exactly when some case holds.

To rule a case out on a box it suffices that some non-negative combination of its rows is negative
everywhere. ``CaseTable`` lists, per case, each row alone and, for rows of the two copies that read the same
logits with opposite signs (``y - t`` and ``t - y'``; ``y_c - y_d`` and ``y'_d - y'_c``), the combinations
``lam * row1 + (1 - lam) * row2``: their upper bounds on the twin see the shared inputs cancel, which is
what the twin is for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from certprune.spec.fairness import Decision

LAMBDAS = (0.25, 0.5, 0.75)


@dataclass(frozen=True, eq=False)
class ClassRows:
    """Rows ``A @ y + a0 >= 0`` (``> 0`` where ``strict``) of one decision class over the read logits."""

    A: np.ndarray
    a0: np.ndarray
    strict: np.ndarray


class DecisionRule:
    """A property's decision: which logits it reads, its classes' rows, and how to decide ONNX outputs."""

    def __init__(self, decision: Decision, n_outputs: int, output_transform: str | None = None) -> None:
        self.decision = decision
        self.transform = output_transform
        if decision.mode == "threshold":
            self.outputs = (decision.output,)
            self.classes = (0, 1)
        else:
            self.outputs = tuple(range(n_outputs))
            self.classes = tuple(range(n_outputs))

    @property
    def logit_slack(self) -> float:
        """Extra clearance a logit needs so that a final float32 sigmoid keeps it on its side of sigmoid(t)
        (four ulps of the probability, divided by the sigmoid's slope at t). Under a softmax the top two
        outputs round to equal values only when their logits are within a few ulps of 1 (the largest
        output is at least 1/K), so 1e-5 keeps argmax of the outputs on the logits' side. 0 otherwise."""
        if self.transform == "softmax" and self.decision.mode == "argmax":
            return 1e-5
        if self.transform != "sigmoid" or self.decision.mode != "threshold":
            return 0.0
        s = 1.0 / (1.0 + math.exp(-self.decision.threshold)) if self.decision.threshold > -700 else 0.0
        slope = s * (1.0 - s)
        return math.inf if slope == 0 else 4.0 * float(np.spacing(np.float32(s))) / slope

    @property
    def width(self) -> int:
        """Logits read per copy."""
        return len(self.outputs)

    def rows(self, c: int) -> ClassRows:
        t = self.decision.threshold
        if self.decision.mode == "threshold":
            sign = 1.0 if c == 1 else -1.0
            return ClassRows(np.array([[sign]]), np.array([-sign * t]), np.array([c == 1]))
        k = self.width
        others = [j for j in range(k) if j != c]
        A = np.zeros((k - 1, k))
        for row, j in enumerate(others):
            A[row, c], A[row, j] = 1.0, -1.0
        return ClassRows(A, np.zeros(k - 1), np.array([j < c for j in others]))

    def decide_logits(self, y: np.ndarray) -> np.ndarray:
        """Classes of a batch of read logits (B, width), exactly as the rows define them."""
        y = np.asarray(y, dtype=np.float64)
        if self.decision.mode == "threshold":
            return (y[:, 0] > self.decision.threshold).astype(np.int64)
        return np.argmax(y, axis=1)

    def decide_outputs(self, out: np.ndarray) -> np.ndarray:
        """Classes from the ORIGINAL model's outputs (B, n_out), final sigmoid/softmax included."""
        out = np.asarray(out)
        if self.decision.mode == "argmax":
            return np.argmax(out, axis=1)
        value = out[:, self.decision.output]
        t = self.decision.threshold
        if self.transform == "sigmoid":  # decide on sigmoid(logit) > sigmoid(t), in the output's precision
            t = 1.0 / (1.0 + math.exp(-t)) if t > -700 else 0.0
            t = np.asarray(t, dtype=value.dtype)
        return (value > t).astype(np.int64)


@dataclass(frozen=True, eq=False)
class CaseTable:
    """Per case ``(c, d)``: its witness rows over ``Y`` and the certification rows ``G @ Y + g0``.

    ``cert_G`` (R, 2k), ``cert_g0`` (R,) stack the certification rows of all cases; ``cert_case`` (R,) says
    whose. A case is impossible on a box when some row of it has ``upper(G @ Y) + g0 < -margin``.
    """

    pairs: tuple[tuple[int, int], ...]
    witness: tuple[ClassRows, ...]
    cert_G: np.ndarray
    cert_g0: np.ndarray
    cert_case: np.ndarray

    @classmethod
    def build(cls, rule: DecisionRule) -> "CaseTable":
        k = rule.width
        pairs = tuple((c, d) for c in rule.classes for d in rule.classes if c != d)
        witness, G, g0, owner = [], [], [], []
        for index, (c, d) in enumerate(pairs):
            first, second = rule.rows(c), rule.rows(d)
            A = np.zeros((len(first.A) + len(second.A), 2 * k))
            A[:len(first.A), :k], A[len(first.A):, k:] = first.A, second.A
            a0 = np.concatenate([first.a0, second.a0])
            witness.append(ClassRows(A, a0, np.concatenate([first.strict, second.strict])))
            rows, consts = list(A), list(a0)
            for i in range(len(first.A)):
                for j in range(len(second.A)):
                    if np.array_equal(first.A[i], -second.A[j]):
                        for lam in LAMBDAS:
                            rows.append(lam * A[i] + (1 - lam) * A[len(first.A) + j])
                            consts.append(lam * a0[i] + (1 - lam) * a0[len(first.A) + j])
            G.extend(rows)
            g0.extend(consts)
            owner.extend([index] * len(rows))
        return cls(pairs, tuple(witness), np.array(G), np.array(g0), np.array(owner))

    def impossible(self, upper: np.ndarray, margin: np.ndarray) -> np.ndarray:
        """(B, cases) True where the case is ruled out, from (B, R) upper bounds of ``cert_G @ Y``."""
        cleared = upper + self.cert_g0 < -margin
        out = np.zeros((upper.shape[0], len(self.pairs)), dtype=bool)
        for index in range(len(self.pairs)):
            out[:, index] = cleared[:, self.cert_case == index].any(axis=1)
        return out

    def scores(self, Y: np.ndarray) -> np.ndarray:
        """(B, cases) the smallest witness row value: positive where the case holds with room to spare."""
        Y = np.asarray(Y, dtype=np.float64)
        return np.stack([(Y @ w.A.T + w.a0).min(axis=1) for w in self.witness], axis=1)
