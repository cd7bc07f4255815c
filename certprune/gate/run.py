"""``run_gate``: every check of a policy on the model (and its baseline), judged, as one JSON-ready result.

The result (``kind: gate``) is the contract with ``certprune report`` and CI:
``{certprune, kind, policy {path, sha256}, model {path, sha256, name}, baseline, outcome, exit_code, seconds,
checks: [{name, kind, outcome, cached, seconds, settings, message, requirements: [...], figures,
baseline_figures, counterexamples: [...]}]}``; see ``certprune.gate.checks`` for each kind's figures and
``certprune.gate.rules`` for how requirements are judged. Everything is validated before anything runs.
Budgets: the policy's ``budget`` bounds the whole gate and a check's ``budget`` that check; a budget stops new
work (samples, partitions), work under way ends within its own timeout, and what did not run is undecided.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from certprune.errors import PropertyError
from certprune.gate import rules
from certprune.gate.cache import ResultCache
from certprune.gate.checks import Prepared, Progress, prepare, with_eps
from certprune.journal import file_sha256
from certprune.onnx_io import load_onnx
from certprune.spec.policy import Policy, read_policy
from certprune.version import __version__

EXIT = {rules.PASS: 0, rules.FAIL: 10, rules.INCONCLUSIVE: 20}


def run_gate(policy_path: str | Path, *, model: str | Path | None = None, cache_dir: str | Path | None = None,
             progress: Progress | None = None) -> dict:
    """Run the policy at ``policy_path`` (on ``model`` instead of the policy's own, when given)."""
    started = time.perf_counter()
    policy = read_policy(policy_path)
    model_path = Path(model) if model is not None else policy.model
    cache = ResultCache(cache_dir)
    subject = _Subject.load(model_path, policy)
    baseline = _baseline(policy, cache, progress) if policy.baseline is not None else None
    deadline = started + policy.budget if policy.budget else math.inf
    checks = []
    for prepared in subject.prepared:
        base = None if baseline is None else baseline.get(prepared.check.name)
        checks.append(_run_check(prepared, subject.sha256, cache, deadline, progress, base))
    outcome = rules.combine(c["outcome"] for c in checks)
    return {"certprune": __version__, "kind": "gate",
            "policy": {"path": str(policy_path), "sha256": policy.sha256},
            "model": subject.describe(), "baseline": _describe_baseline(policy),
            "outcome": outcome, "exit_code": EXIT[outcome], "seconds": round(time.perf_counter() - started, 3),
            "checks": checks}


class _Subject:
    """A model with every check prepared for it (inputs validated, digests computed)."""

    def __init__(self, path: Path, sha256: str, prepared: list[Prepared]) -> None:
        self.path, self.sha256, self.prepared = path, sha256, prepared

    @classmethod
    def load(cls, path: Path, policy: Policy) -> "_Subject":
        sha = file_sha256(path, "model")
        network = load_onnx(path)
        return cls(path, sha, [prepare(check, network, path) for check in policy.checks])

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "name": self.path.stem}


def _run_check(prepared: Prepared, model_sha: str, cache: ResultCache, gate_deadline: float,
               progress: Progress | None, baseline: dict | None) -> dict:
    """The check's figures (from the cache, or run now), judged against its requirements."""
    check = prepared.check
    started = time.perf_counter()
    deadline = min(gate_deadline, started + check.budget if check.budget else math.inf)
    stored, cached = _results(prepared, model_sha, cache, deadline, progress)
    figures = stored["figures"]
    rows = []
    for requirement in with_eps(check):
        value = rules.metric_interval(check.kind, figures, requirement.metric, requirement.eps)
        base = None
        if requirement.vs_baseline:
            base = None if baseline is None else rules.metric_interval(check.kind, baseline, requirement.metric,
                                                                       requirement.eps)
        rows.append(rules.judge(requirement, value, base))
    outcome = rules.combine(r["outcome"] for r in rows)
    failed = [r["message"] for r in rows if r["outcome"] != rules.PASS]
    return {"name": check.name, "kind": check.kind, "outcome": outcome,
            "cached": cached,
            "seconds": round(time.perf_counter() - started, 3), "settings": prepared.settings,
            "complete": stored["complete"], "message": "; ".join(failed) or "every requirement met",
            "requirements": rows, "figures": figures, "baseline_figures": baseline,
            "counterexamples": stored["counterexamples"]}


def _baseline(policy: Policy, cache: ResultCache, progress: Progress | None) -> dict[str, dict]:
    """Each check's figures on the baseline: run on a baseline model (cached like any run), or read from a
    stored gate result, where a check of the same name must exist."""
    if policy.baseline.suffix.lower() == ".json":
        try:
            stored = json.loads(policy.baseline.read_text())
            checks = {c["name"]: c["figures"] for c in stored["checks"]} if stored.get("kind") == "gate" else None
        except (OSError, ValueError, KeyError, TypeError):
            checks = None
        if checks is None:
            raise PropertyError(f"{policy.source}: baseline {policy.baseline} is not a certprune gate result (JSON)")
        missing = [c.name for c in policy.checks if c.name not in checks]
        if missing:
            raise PropertyError(f"{policy.source}: baseline result {policy.baseline} has no check named "
                                f"{', '.join(missing)}")
        return checks
    subject = _Subject.load(policy.baseline, policy)
    out = {}
    for prepared in subject.prepared:
        budget = prepared.check.budget
        deadline = time.perf_counter() + budget if budget else math.inf
        out[prepared.check.name] = _results(prepared, subject.sha256, cache, deadline, progress)[0]["figures"]
    return out


def _results(prepared: Prepared, model_sha: str, cache: ResultCache, deadline: float,
             progress: Progress | None) -> tuple[dict, bool]:
    """The check's stored result and True, or its result run now (stored when complete) and False."""
    header = prepared.key_header(model_sha)
    stored = cache.get(header)
    if stored is not None:
        return stored, True
    run = prepared.work(deadline, cache.journal(header), progress)
    stored = {"figures": run.figures, "counterexamples": run.counterexamples, "complete": run.complete}
    if run.complete:
        cache.put(header, stored)
    return stored, False


def _describe_baseline(policy: Policy) -> dict | None:
    if policy.baseline is None:
        return None
    return {"path": str(policy.baseline), "sha256": file_sha256(policy.baseline, "baseline"),
            "name": policy.baseline.stem}
