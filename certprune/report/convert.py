"""Every result file in one shape: certify and verify JSON become checks as the gate writes them.

A *part* is what one file says about one model: the model's identity, its checks (each a dict in the gate's
JSON shape: name, kind, outcome, seconds, settings, requirements, figures, counterexamples) and the gate's
outcome when a gate ran on it. A gate result with a baseline gives two parts; the baseline's is *derived*
(its figures only, no requirements or counterexamples).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VERIFY_WORDS = ("sat", "unsat", "unknown", "timeout")
UNDECIDED = ("unknown", "timeout")


@dataclass
class Part:
    model: dict
    checks: list[dict] = field(default_factory=list)
    outcome: str | None = None
    derived: bool = False
    baseline: dict | None = None     # the identity of the model this one was gated against


def detect(data: object) -> str | None:
    """Which certprune result this is: gate, certify, robustness, vnnlib or fairness (None: not one)."""
    if not isinstance(data, dict):
        return None
    if data.get("kind") == "gate" and "checks" in data:
        return "gate"
    if data.get("kind") == "fairness" and "partitions" in data:
        return "fairness"
    if data.get("result") in VERIFY_WORDS and "verdict" in data:
        return "vnnlib"
    if {"totals", "samples", "eps", "model"} <= data.keys():
        return "certify" if "data" in data else "robustness" if "property" in data else None
    return None


def model_identity(path: str, sha256: str | None = None, name: str | None = None) -> dict:
    return {"path": str(path), "sha256": sha256, "name": name or Path(str(path)).stem}


def from_gate(data: dict) -> list[Part]:
    """The gated model, after its baseline when it has one (the reference comes first)."""
    model = dict(data["model"])
    baseline = data.get("baseline")
    reference = model_identity(baseline["path"], baseline.get("sha256"), baseline.get("name")) if baseline else None
    parts = [Part(model_identity(model["path"], model.get("sha256"), model.get("name")),
                  [dict(check) for check in data["checks"]], data["outcome"], baseline=reference)]
    if reference is not None:
        checks = [_baseline_check(check) for check in data["checks"] if check.get("baseline_figures")]
        parts.insert(0, Part(dict(reference), checks, None, derived=True))
    return parts


def _baseline_check(check: dict) -> dict:
    """The baseline's side of a gate check: the same settings, the baseline's figures, nothing judged."""
    return {"name": check["name"], "kind": check["kind"], "outcome": None, "cached": False,
            "seconds": None, "settings": check.get("settings", {}), "message": "", "requirements": [],
            "figures": check["baseline_figures"], "baseline_figures": None, "counterexamples": []}


def from_certify(data: dict) -> list[Part]:
    """``certprune certify --json``: one eps on one data set; figures only, nothing to pass or fail."""
    check = _samples_check(f"certify {data['data']}", data["data"], data, None)
    return [Part(model_identity(data["model"]), [check])]


def from_robustness(data: dict) -> list[Part]:
    """``certprune verify --property robustness.yaml --json``: the samples of a robustness property."""
    data_name = Path(str(data["property"])).stem
    totals = data["totals"]
    outcome = "fail" if totals["falsified"] or totals["misclassified"] else \
        "pass" if totals["verified"] == totals["samples"] else "inconclusive"   # as `verify` decides
    return [Part(model_identity(data["model"]), [_samples_check(data_name, data_name, data, outcome)])]


def _samples_check(name: str, data_name: str, data: dict, outcome: str | None) -> dict:
    eps = float(data["eps"])
    entry = per_eps_entry(eps, data["samples"])
    examples = [{"label": f"sample {r['index']} at eps {eps:g} (label {r.get('label', '?')})", "eps": f"{eps:g}",
                 "x": _floats(r["counterexample_x"]), "outputs": _floats(r.get("counterexample_logits") or []),
                 "file": None} for r in data["samples"] if r.get("counterexample_x") is not None]
    return {"name": name, "kind": "certify", "outcome": outcome, "cached": False, "seconds": entry["seconds"],
            "settings": {"data": data_name, "eps": [eps], "samples": len(data["samples"]),
                         "timeout": data.get("timeout")},
            "message": "", "requirements": [], "baseline_figures": None, "counterexamples": examples,
            "figures": {"data": data_name, "samples": len(data["samples"]), "per_eps": {f"{eps:g}": entry}}}


def per_eps_entry(eps: float, records: list[dict]) -> dict:
    """Counts and shares of one eps from its per-sample records."""
    counts = {status: sum(1 for r in records if r["status"] == status)
              for status in ("verified", "falsified", "unknown", "timeout", "misclassified")}
    n = max(len(records), 1)
    return {"eps": eps, **counts, "certified_accuracy": counts["verified"] / n,
            "falsified_share": counts["falsified"] / n,
            "undecided_share": (counts["unknown"] + counts["timeout"]) / n,
            "seconds": float(sum(r["seconds"] for r in records)),
            "records": [{key: r[key] for key in ("index", "status", "seconds", "unstable", "crown_verified")
                         if key in r} for r in records]}


def from_vnnlib(data: dict) -> list[Part]:
    """``certprune verify --property P.vnnlib --json``."""
    verdict = str(data["verdict"])
    holds = {"verified": True, "falsified": False}.get(verdict)
    counterexamples = []
    if data.get("counterexample"):
        counterexamples.append({"label": "counterexample (replayed with onnxruntime)",
                                "x": _floats(data["counterexample"]["x"]),
                                "outputs": _floats(data["counterexample"]["y"]), "file": None})
    check = {"name": Path(str(data["property"])).stem, "kind": "vnnlib", "outcome": _outcome(holds),
             "cached": False, "seconds": float(data["seconds"]), "settings": dict(data.get("details") or {}),
             "message": "", "requirements": [], "baseline_figures": None, "counterexamples": counterexamples,
             "figures": {"verdict": verdict, "holds": holds}}
    return [Part(model_identity(data["model"]), [check])]


def from_fairness(data: dict) -> list[Part]:
    """``certprune verify --property fairness.yaml --json``: partitions, shares of the domain, counterexamples."""
    summary = data["summary"]
    undecided = sum(summary.get(label, {}).get("partitions", 0) for label in ("unknown", "timeout", "not run"))
    holds = {"verified": True, "falsified": False}.get(str(data["verdict"]))
    figures = {"partitions": int(data["total_partitions"]), "certified": summary["certified"]["partitions"],
               "falsified": summary["falsified"]["partitions"], "unknown": undecided,
               "certified_share": summary["certified"]["share"], "falsified_share": summary["falsified"]["share"],
               "undecided_share": sum(summary.get(label, {}).get("share", 0.0)
                                      for label in ("unknown", "timeout", "not run")),
               "holds": holds}
    check = {"name": Path(str(data["property"])).stem, "kind": "fairness", "outcome": _outcome(holds),
             "cached": False, "seconds": float(data["seconds"]), "settings": dict(data.get("settings") or {}),
             "message": "", "requirements": [], "baseline_figures": None, "figures": figures,
             "counterexamples": [_fairness_pair(p) for p in data["partitions"] if p.get("counterexample")]}
    return [Part(model_identity(data["model"], data.get("model_sha256")), [check])]


def _fairness_pair(partition: dict) -> dict:
    cex = partition["counterexample"]
    names = list(cex["x"])
    return {"label": f"partition {partition['partition']} (found by {partition.get('method', '?')})",
            "names": names, "x": _floats(cex["x"][n] for n in names),
            "x_prime": _floats(cex["x_prime"][n] for n in names),
            "outputs": _floats(cex["outputs"][0]), "outputs_prime": _floats(cex["outputs"][1]),
            "decisions": [int(d) for d in cex["decisions"]], "file": None}


def _outcome(holds: bool | None) -> str:
    return {True: "pass", False: "fail"}.get(holds, "inconclusive")


def _floats(values) -> list[float]:
    return np.asarray(list(values), dtype=float).ravel().tolist()


CONVERTERS = {"gate": from_gate, "certify": from_certify, "robustness": from_robustness, "vnnlib": from_vnnlib,
              "fairness": from_fairness}
