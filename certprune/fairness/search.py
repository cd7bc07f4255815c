"""Deciding one partition: the ``auto`` engine (bounds, input splitting, search, MILP, Z3) and the ``z3`` engine.

``auto``: random pairs first (most unfair partitions fall here); then bounds on the twin for every row
(IBP, then CROWN on what IBP leaves open), which rule out whole cases; then gradient search; then branch and
bound over input splits. An open leaf is split on the integer attribute with the largest width times
first-layer weight (``[lo, m]``, ``[m + 1, hi]``: integer boxes stay integer) until its twin has few enough
unstable neurons for the exact MILP, which decides it (Z3 if the MILP cannot). A leaf the exact solvers
cannot settle (pairs within the float margin of the threshold, or no time) is split further; a leaf that
shrinks to one pair is decided by the model itself on onnxruntime. The partition is VERIFIED when every
leaf is ruled out, FALSIFIED as soon as a pair is replayed on the ONNX model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from certprune.fairness import attack
from certprune.fairness.partition import Partition
from certprune.fairness.problem import FairnessProblem, box_size
from certprune.fairness.replay import Referee
from certprune.fairness.smt import decide_milp, decide_z3
from certprune.fairness.twin import prune
from certprune.types import Verdict

LEAF_SAMPLES = 8  # random pairs tried in every open leaf


class Leaf(NamedTuple):
    lo: np.ndarray
    hi: np.ndarray
    open: np.ndarray  # cases not yet ruled out


@dataclass
class Outcome:
    """How one partition was decided: the verdict, the method, a replayed pair, and what it took."""

    verdict: Verdict
    method: str
    counterexample: dict | None = None
    details: dict = field(default_factory=dict)


@dataclass
class _Tally:
    closed_by: dict = field(default_factory=dict)  # method -> leaves ruled out
    leaves: int = 0
    milp_calls: int = 0
    z3_calls: int = 0
    pruning: dict | None = None
    pairs: float = 0.0  # compared pairs (integer points of the rows' twin boxes) of the partition
    proven: float = 0.0  # of which in leaves ruled out so far

    def close(self, method: str, size: float = 0.0) -> None:
        self.closed_by[method] = self.closed_by.get(method, 0) + 1
        self.proven += size

    def method(self) -> str:
        return "+".join(m for m in ("ibp", "crown", "alpha", "milp", "z3", "replay", "empty") if m in self.closed_by)

    def details(self) -> dict:
        return {"leaves": self.leaves, "closed_by": self.closed_by, "milp_calls": self.milp_calls,
                "z3_calls": self.z3_calls, "pruning": self.pruning,
                "proven_share": min(1.0, self.proven / self.pairs) if self.pairs else 0.0}


def decide(problem: FairnessProblem, referee: Referee, partition: Partition, deadline: float) -> Outcome:
    """The engine of ``problem.settings`` on one partition, within ``deadline`` (perf_counter seconds)."""
    if problem.settings.engine == "z3":
        return decide_with_z3(problem, referee, partition, deadline)
    return decide_auto(problem, referee, partition, deadline)


def decide_with_z3(problem: FairnessProblem, referee: Referee, partition: Partition, deadline: float) -> Outcome:
    """Fairify's method, soundly: bounds on the partition's twin box, stable neurons pruned, one Z3 query."""
    lo, hi = problem.hull(partition)
    answer = decide_z3(problem, referee, lo, hi, np.ones(len(problem.table.pairs), dtype=bool), deadline)
    verdict = {"unsat": Verdict.VERIFIED, "sat": Verdict.FALSIFIED, "timeout": Verdict.TIMEOUT}.get(
        answer.status, Verdict.UNKNOWN)
    return Outcome(verdict, "z3", answer.counterexample, {**answer.details, "z3_seconds": answer.seconds})


def decide_auto(problem: FairnessProblem, referee: Referee, partition: Partition, deadline: float) -> Outcome:
    settings = problem.settings
    rng = np.random.default_rng(settings.seed + partition.index)
    tally = _Tally()
    lo, hi = problem.rows(partition)
    found = attack.search(problem, referee, lo, hi, samples=settings.samples, steps=0, restarts=0, rng=rng,
                          deadline=deadline, descend=False)
    if found is not None:
        return Outcome(Verdict.FALSIFIED, found["found_by"], found, tally.details())
    all_cases = np.ones(len(problem.table.pairs), dtype=bool)
    queue = [Leaf(a, b, all_cases.copy()) for a, b in zip(lo, hi)]
    tally.pairs = sum(box_size(a, b, problem.integer) for a, b in zip(lo, hi))
    root = True
    while queue:
        if time.perf_counter() > deadline:
            return Outcome(Verdict.TIMEOUT, "timeout", None, tally.details())
        batch, queue = queue[-settings.batch:], queue[:-settings.batch]
        outcome, children = _round(problem, referee, batch, tally, rng, deadline, root)
        if outcome is not None:
            return outcome
        if root and children:
            found = attack.search(problem, referee, lo, hi, samples=settings.samples, steps=settings.attack_steps,
                                  restarts=settings.attack_restarts, rng=rng, deadline=deadline)
            if found is not None:
                return Outcome(Verdict.FALSIFIED, found["found_by"], found, tally.details())
        root = False
        queue.extend(children)
    return Outcome(Verdict.VERIFIED, tally.method() or "empty", None, tally.details())


def _round(problem: FairnessProblem, referee: Referee, batch: list[Leaf], tally: _Tally, rng, deadline: float,
           root: bool) -> tuple[Outcome | None, list[Leaf]]:
    """Bound a batch of leaves; close, search, split or solve each open one."""
    lo = np.stack([leaf.lo for leaf in batch])
    hi = np.stack([leaf.hi for leaf in batch])
    tally.leaves += len(batch)
    open_cases, closer, final, history = _bound(problem, lo, hi, np.stack([leaf.open for leaf in batch]), root)
    if root:
        tally.pruning = prune(problem.twin64, history).stats
    live = [i for i in range(len(batch)) if open_cases[i].any()]
    for i in range(len(batch)):
        if not open_cases[i].any():
            tally.close(closer[i], box_size(lo[i], hi[i], problem.integer))
    found = _sample_leaves(problem, referee, lo[live], hi[live], rng, deadline)
    if found is not None:
        return Outcome(Verdict.FALSIFIED, found["found_by"], found, tally.details()), []
    children: list[Leaf] = []
    for i in live:
        leaf = Leaf(lo[i], hi[i], open_cases[i])
        bounds = _take(final[i][0], [final[i][1]])
        unstable = sum(int(c) for c in bounds.unstable_counts())
        if np.all(leaf.lo == leaf.hi):
            # One pair left: the model's own float32 decisions on it are the answer, whatever the margins.
            found = referee.confirm(leaf.lo, leaf.lo, leaf.hi, "replay")
            if found is not None:
                return Outcome(Verdict.FALSIFIED, "replay", found, tally.details()), []
            tally.close("replay", 1.0)
        elif problem.straddles(leaf.lo, leaf.hi) or unstable > problem.settings.milp_unstable:
            children.extend(split(problem, leaf))
        else:
            outcome, undecided = _exact(problem, referee, leaf, bounds, tally, deadline)
            if outcome is not None:
                return outcome, []
            if undecided:  # pairs within the float margin, or out of solver time: smaller boxes settle them
                children.extend(split(problem, leaf))
    return None, children


def _bound(problem: FairnessProblem, lo: np.ndarray, hi: np.ndarray, opened: np.ndarray, everything: bool):
    """Run the bound methods in turn, each on the leaves the previous ones left open (on all of them when
    ``everything``). Returns the open cases, the method that closed each leaf, per leaf its last
    (Bounds, position) and the (method, Bounds) history of the first call (for pruning statistics)."""
    table = problem.table
    C = torch.from_numpy(table.cert_G)
    open_cases = opened.copy()
    closer = [""] * len(lo)
    final: list = [None] * len(lo)
    history = []
    idx = np.arange(len(lo))
    prior = None
    for name in problem.settings.bounds:
        (_, b), = problem.bounds(lo[idx], hi[idx], C, (name,), prior)
        if len(idx) == len(lo):
            history.append((name, b))
        # the float32 error on these very boxes, from this method's bounds of their activations
        margin = problem.margins(table.cert_G, table.cert_g0, problem.float_error(lo[idx], hi[idx], b))
        open_cases[idx] &= ~table.impossible(b.output_upper.numpy(), margin)
        for position, i in enumerate(idx):
            final[i] = (b, position)
            if not closer[i] and not open_cases[i].any():
                closer[i] = name
        keep = [p for p, i in enumerate(idx) if everything or open_cases[i].any()]
        if not keep:
            break
        idx, prior = idx[keep], _take(b, keep)
    return open_cases, closer, final, history


def _sample_leaves(problem, referee, lo, hi, rng, deadline) -> dict | None:
    if not len(lo):
        return None
    return attack.search(problem, referee, lo, hi, samples=LEAF_SAMPLES, steps=0, restarts=0, rng=rng,
                         deadline=deadline, descend=False)


def _exact(problem: FairnessProblem, referee: Referee, leaf: Leaf, bounds, tally: _Tally,
           deadline: float) -> tuple[Outcome | None, bool]:
    """MILP per open case (Z3 when the MILP cannot tell). Returns the outcome when a pair was replayed, and
    whether some case stayed undecided (the leaf keeps its still open cases)."""
    settings = problem.settings
    for case in np.flatnonzero(leaf.open):
        remaining = deadline - time.perf_counter()
        share = 0.5 * remaining if settings.z3_fallback else remaining
        tally.milp_calls += 1
        answer = decide_milp(problem, referee, leaf.lo, leaf.hi, int(case), bounds, time.perf_counter() + share)
        # Z3 shares the float margin, so it helps only when the MILP failed, not when pairs sit within it.
        if answer.status in ("timeout", "unknown") and settings.z3_fallback:
            tally.z3_calls += 1
            only = np.zeros_like(leaf.open)
            only[case] = True
            answer = decide_z3(problem, referee, leaf.lo, leaf.hi, only, deadline)
            answer.status = answer.status if answer.status != "unsat" else "unsat-z3"
        if answer.status == "sat":
            return Outcome(Verdict.FALSIFIED, answer.counterexample["found_by"], answer.counterexample,
                           tally.details()), False
        if answer.status not in ("unsat", "unsat-z3"):
            return None, True
        leaf.open[case] = False
        closed_by = "z3" if answer.status == "unsat-z3" else "milp"
    tally.close(closed_by, box_size(leaf.lo, leaf.hi, problem.integer))
    return None, False


def split(problem: FairnessProblem, leaf: Leaf) -> list[Leaf]:
    """Two halves along the slot with the largest width x sensitivity (straddling relaxed slots first)."""
    lo, hi = leaf.lo, leaf.hi
    width = hi - lo
    candidates = np.zeros(len(lo), dtype=bool)
    for k in problem.straddles(lo, hi):
        candidates[problem.layout.shared_slot(problem.layout.relaxed[k])] = True
        candidates[problem.layout.delta_slot + k] = True
    if not (candidates & (width > 0)).any():
        candidates[:] = True
    score = np.where(candidates & (width > 0), width * (problem.sensitivity + 1e-12), -1.0)
    j = int(np.argmax(score))
    if problem.integer[j]:
        mid = np.floor((lo[j] + hi[j]) / 2)
        cuts = ((lo[j], mid), (mid + 1, hi[j]))
    else:
        mid = (lo[j] + hi[j]) / 2
        cuts = ((lo[j], mid), (mid, hi[j]))
    children = []
    for a, b in cuts:
        c_lo, c_hi = lo.copy(), hi.copy()
        c_lo[j], c_hi[j] = a, b
        c_lo, c_hi = problem.tighten(c_lo, c_hi)
        if np.all(c_lo <= c_hi):
            children.append(Leaf(c_lo, c_hi, leaf.open.copy()))
    return children


def _take(bounds, rows):
    """Bounds of the boxes ``rows`` alone."""
    rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
    return type(bounds)(bounds.output_lower[rows], bounds.output_upper[rows],
                        tuple(t[rows] for t in bounds.pre_lower), tuple(t[rows] for t in bounds.pre_upper),
                        bounds.infeasible[rows], bounds.method)
