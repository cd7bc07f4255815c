"""Searching counterexample pairs at integer points: random sampling, then sign-gradient ascent with rounding.

Only a search: nothing here certifies, and every candidate goes through the Referee (onnxruntime) before it
counts. Candidates are scored on the twin by ``CaseTable.scores`` (positive where some case holds).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from certprune.fairness.problem import FairnessProblem, integer_points
from certprune.fairness.replay import Referee

CANDIDATES = 8  # candidates replayed per round


def project(problem: FairnessProblem, z: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Into the boxes (rows of lo/hi broadcast), integers rounded, copy-2 relaxed values kept in range."""
    z = np.minimum(np.maximum(z, lo), hi)
    z = np.where(problem.integer, np.round(z), z)
    z = np.minimum(np.maximum(z, lo), hi)
    for k, i in enumerate(problem.layout.relaxed):
        r, d = problem.layout.shared_slot(i), problem.layout.delta_slot + k
        d_lo, d_hi = problem.domain(i)
        z[:, d] = np.clip(z[:, d], d_lo - z[:, r], d_hi - z[:, r])
    return z


def scores(problem: FairnessProblem, z: np.ndarray) -> np.ndarray:
    """(N, cases) witness scores of twin inputs, from a float32 forward pass."""
    with torch.no_grad():
        Y = problem.twin(torch.from_numpy(z.astype(np.float32))).double().numpy()
    return problem.table.scores(Y)


def search(problem: FairnessProblem, referee: Referee, lo: np.ndarray, hi: np.ndarray, *,
           samples: int, steps: int, restarts: int, rng: np.random.Generator, deadline: float,
           descend: bool = True) -> dict | None:
    """A replayed counterexample in one of the boxes (rows of ``lo``/``hi``), or None."""
    lo, hi = np.atleast_2d(lo), np.atleast_2d(hi)
    owner = np.repeat(np.arange(len(lo)), samples)
    z = np.concatenate([integer_points(a, b, problem.integer, samples, rng) for a, b in zip(lo, hi)])
    z = project(problem, z, lo[owner], hi[owner])
    s = scores(problem, z)
    found = _replay_best(referee, z, s, lo[owner], hi[owner], "sampling")
    if found is not None or not descend or steps <= 0 or time.perf_counter() > deadline:
        return found
    best = np.argsort(-s.max(axis=1), kind="stable")[:restarts]
    return _ascend(problem, referee, z[best], s[best].argmax(axis=1), lo[owner[best]], hi[owner[best]],
                   steps, deadline)


def _ascend(problem: FairnessProblem, referee: Referee, z: np.ndarray, case: np.ndarray, lo: np.ndarray,
            hi: np.ndarray, steps: int, deadline: float) -> dict | None:
    """Sign-gradient ascent of each start's case score (the smallest witness row), rounding every step."""
    table = problem.table
    A = [torch.from_numpy(w.A).float() for w in table.witness]
    a0 = [torch.from_numpy(w.a0).float() for w in table.witness]
    width = torch.from_numpy(hi - lo).float()
    x = torch.from_numpy(z).float()
    lo_t, hi_t = torch.from_numpy(lo).float(), torch.from_numpy(hi).float()
    for step in range(steps):
        x = x.detach().requires_grad_(True)
        Y = problem.twin(x)
        value = torch.stack([(Y[i] @ A[c].T + a0[c]).min() for i, c in enumerate(case.tolist())])
        (grad,) = torch.autograd.grad(value.sum(), x)
        size = 0.25 * (0.04 ** (step / max(steps - 1, 1)))
        x = torch.max(torch.min(x.detach() + size * width * grad.sign(), hi_t), lo_t)
        rounded = project(problem, x.double().numpy(), lo, hi)
        found = _replay_best(referee, rounded, scores(problem, rounded), lo, hi, "gradient")
        if found is not None or time.perf_counter() > deadline:
            return found
    return None


def _replay_best(referee: Referee, z: np.ndarray, s: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 method: str) -> dict | None:
    best = s.max(axis=1)
    order = np.argsort(-best, kind="stable")[:CANDIDATES]
    order = order[best[order] > 0]
    for i in order:
        found = referee.confirm(z[i], lo[i], hi[i], method)
        if found is not None:
            return found
    return None
