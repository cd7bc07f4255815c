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
import warnings
from pathlib import Path

from certprune.errors import CertpruneError, PropertyError
from certprune.gate import rules
from certprune.gate.cache import ResultCache
from certprune.gate.checks import Prepared, Progress, describe, prepare, with_eps
from certprune.journal import file_sha256
from certprune.spec.policy import Policy, read_policy
from certprune.version import __version__

EXIT = {rules.PASS: 0, rules.FAIL: 10, rules.INCONCLUSIVE: 20}


def run_gate(policy_path: str | Path, *, model: str | Path | None = None, cache_dir: str | Path | None = None,
             progress: Progress | None = None, cluster: str | None = None) -> dict:
    """Run the policy at ``policy_path`` (on ``model`` instead of the policy's own, when given); ``cluster``
    runs certify samples and fairness partitions on Dask (``certprune.cluster``)."""
    started = time.perf_counter()
    policy = read_policy(policy_path)
    cache = ResultCache(cache_dir)
    deadline = started + policy.budget if policy.budget else math.inf
    subject = _Subject(Path(model) if model is not None else policy.model, policy, cache, cluster)
    baseline = _baseline(policy, cache, deadline, progress, cluster) if policy.baseline is not None else None
    checks = [_judge(check, stored, cached, None if baseline is None else baseline[check.check.name])
              for check, stored, cached in subject.results(deadline, progress)]
    outcome = rules.combine(c["outcome"] for c in checks)
    return {"certprune": __version__, "kind": "gate",
            "policy": {"path": str(policy_path), "sha256": policy.sha256},
            "model": subject.describe(), "baseline": _describe_baseline(policy),
            "outcome": outcome, "exit_code": EXIT[outcome], "seconds": round(time.perf_counter() - started, 3),
            "checks": checks}


class _Subject:
    """A model and the policy's checks on it: served from the cache, or prepared (model loaded once, every
    missing check validated before any runs) and run."""

    def __init__(self, path: Path, policy: Policy, cache: ResultCache, cluster: str | None = None) -> None:
        self.path, self.cache, self.cluster, self.source = path, cache, cluster, policy.source
        self.sha256 = file_sha256(path, "model")
        self.checks = [describe(check) for check in policy.checks]

    def results(self, deadline: float, progress: Progress | None):
        """(Prepared, stored result, whether it came from the cache) per check, in the policy's order."""
        stored = [self.cache.get(p.key_header(self.sha256)) for p in self.checks]
        missing = [i for i, s in enumerate(stored) if s is None]
        if missing:
            from certprune.onnx_io import load_onnx  # deferred: a gate served from the cache needs no torch

            network = load_onnx(self.path)
            for i in missing:
                check = self.checks[i].check
                try:
                    self.checks[i] = prepare(self.checks[i], network, self.path, self.cluster)
                except CertpruneError as error:  # e.g. a label column the data file lacks: name the policy line
                    raise type(error)(f"{self.source} line {check.line}, check '{check.name}': {error}") from error
        for i, described in enumerate(self.checks):
            if stored[i] is not None:
                yield described, stored[i], True
                continue
            started = time.perf_counter()
            budget = described.check.budget
            check_deadline = min(deadline, started + budget if budget else math.inf)
            header = described.key_header(self.sha256)
            run = described.work(check_deadline, self.cache.journal(header), progress)
            result = {"figures": run.figures, "counterexamples": run.counterexamples, "complete": run.complete,
                      "seconds": round(time.perf_counter() - started, 3)}
            if run.complete:
                self.cache.put(header, result)
            yield described, result, False

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "name": self.path.stem}


def _judge(described: Prepared, stored: dict, cached: bool, baseline: dict | None) -> dict:
    """The check's figures judged against its requirements, as one entry of the gate result."""
    check = described.check
    figures = stored["figures"]
    rows = []
    for requirement in with_eps(check):
        value = rules.metric_interval(check.kind, figures, requirement.metric, requirement.eps)
        base = None
        if requirement.vs_baseline and baseline is not None:
            base = rules.metric_interval(check.kind, baseline, requirement.metric, requirement.eps)
        rows.append(rules.judge(requirement, value, base))
    outcome = rules.combine(r["outcome"] for r in rows)
    failed = [r["message"] for r in rows if r["outcome"] != rules.PASS]
    return {"name": check.name, "kind": check.kind, "outcome": outcome, "cached": cached,
            "seconds": 0.0 if cached else stored["seconds"], "run_seconds": stored.get("seconds"),
            "settings": described.settings, "complete": stored["complete"],
            "message": "; ".join(failed) or "every requirement met", "requirements": rows, "figures": figures,
            "baseline_figures": baseline, "counterexamples": stored["counterexamples"]}


def _baseline(policy: Policy, cache: ResultCache, deadline: float, progress: Progress | None,
              cluster: str | None = None) -> dict[str, dict]:
    """Each check's figures on the baseline: run on a baseline model (cached like any run), or read from a
    stored gate result, where a check of the same name must exist."""
    if policy.baseline.suffix.lower() != ".json":
        subject = _Subject(policy.baseline, policy, cache, cluster)
        return {d.check.name: stored["figures"] for d, stored, _ in subject.results(deadline, progress)}
    try:
        stored = json.loads(policy.baseline.read_text())
        entries = {c["name"]: c for c in stored["checks"]} if stored.get("kind") == "gate" else None
        if entries is not None and not all(isinstance(c.get("figures"), dict) for c in entries.values()):
            entries = None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        entries = None
    if entries is None:
        raise PropertyError(f"{policy.source}: baseline {policy.baseline} is not a certprune gate result (JSON)")
    missing = [c.name for c in policy.checks if c.name not in entries]
    if missing:
        raise PropertyError(f"{policy.source}: baseline result {policy.baseline} has no check named "
                            f"{', '.join(missing)}")
    for check in policy.checks:
        _fits_baseline(policy, check, entries[check.name])
    return {name: entry["figures"] for name, entry in entries.items()}


# settings whose difference makes a stored baseline's figures those of another measurement
_COMPARED = ("samples", "timeout", "label", "features")


def _fits_baseline(policy: Policy, check, entry: dict) -> None:
    """A stored baseline check must be of the same kind and hold every eps a ``vs_baseline`` rule compares at;
    one measured with other samples, timeout or columns is compared with a warning."""
    where = f"{policy.source}: baseline result {policy.baseline}, check {check.name!r}"
    if entry.get("kind") != check.kind:
        raise PropertyError(f"{where} is a {entry.get('kind')} check, this policy's is a {check.kind} check")
    if check.kind == "certify":
        held = entry["figures"].get("per_eps", {})
        wanted = [rules.eps_key(r.eps) for r in with_eps(check) if r.vs_baseline]
        absent = sorted({key for key in wanted if key not in held}, key=float)
        if absent:
            have = ", ".join(sorted(held, key=float)) or "none"
            raise PropertyError(f"{where} has no figures at eps {', '.join(absent)} (it has {have}); vs_baseline "
                                "compares at the same eps")
    if not any(r.vs_baseline for r in check.requirements):
        return
    then, now = entry.get("settings") or {}, describe(check).settings
    changed = [f"{key} {then[key]} -> {now[key]}" for key in _COMPARED if key in then and key in now
               and then[key] != now[key]]
    if changed:
        warnings.warn(f"{where} was measured with other settings ({'; '.join(changed)}): vs_baseline compares "
                      "figures of different measurements", stacklevel=2)


def _describe_baseline(policy: Policy) -> dict | None:
    if policy.baseline is None:
        return None
    return {"path": str(policy.baseline), "sha256": file_sha256(policy.baseline, "baseline"),
            "name": policy.baseline.stem}
