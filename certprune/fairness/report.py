"""What a fairness run found: per-partition results, the overall verdict, the certificate and a summary table."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from certprune.types import EXIT_CODES, Verdict

LABELS = {Verdict.VERIFIED: "certified", Verdict.FALSIFIED: "falsified", Verdict.UNKNOWN: "unknown",
          Verdict.TIMEOUT: "timeout"}


@dataclass(frozen=True)
class PartitionResult:
    """One partition's verdict, the method that decided it, its size in points, and any replayed pair."""

    index: int
    verdict: Verdict
    method: str
    seconds: float
    points: int | float
    box: dict
    counterexample: dict | None = None
    details: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The journal / JSON form."""
        return {"partition": self.index, "verdict": self.verdict.value, "method": self.method,
                "seconds": round(self.seconds, 4), "points": self.points, "box": self.box,
                "counterexample": self.counterexample, "details": self.details}

    @classmethod
    def from_record(cls, r: dict) -> "PartitionResult":
        return cls(int(r["partition"]), Verdict(r["verdict"]), r["method"], float(r["seconds"]), r["points"],
                   r["box"], r.get("counterexample"), r.get("details") or {})


@dataclass(frozen=True)
class FairnessReport:
    """A whole run. ``partitions`` holds the results of the partitions run, sorted by index; the selection
    may be smaller than the domain (``limit``) and some may not have run (total timeout)."""

    model: str
    model_sha256: str
    property: str
    property_sha256: str
    engine: str
    settings: dict
    total_partitions: int
    selected: int
    total_points: int | float
    partitions: tuple[PartitionResult, ...]
    seconds: float

    @property
    def not_run(self) -> int:
        return self.selected - len(self.partitions)

    @property
    def verdict(self) -> Verdict:
        verdicts = {p.verdict for p in self.partitions}
        if Verdict.FALSIFIED in verdicts:
            return Verdict.FALSIFIED
        if verdicts <= {Verdict.VERIFIED} and self.not_run == 0 and self.selected == self.total_partitions:
            return Verdict.VERIFIED
        return Verdict.TIMEOUT if Verdict.TIMEOUT in verdicts else Verdict.UNKNOWN

    @property
    def exit_code(self) -> int:
        """0 every partition certified, 10 some counterexample, 20 undecided partitions remain."""
        return EXIT_CODES[self.verdict]

    def counts(self) -> dict[str, dict[str, float]]:
        """Per label: partitions and their share of the domain's points (of all partitions, run or not)."""
        out = {label: {"partitions": 0, "points": 0} for label in LABELS.values()}
        for p in self.partitions:
            out[LABELS[p.verdict]]["partitions"] += 1
            out[LABELS[p.verdict]]["points"] += p.points
        run_points = sum(p.points for p in self.partitions)
        out["not run"] = {"partitions": self.total_partitions - len(self.partitions),
                          "points": max(self.total_points - run_points, 0)}  # float sums may stray below 0
        for entry in out.values():
            entry["share"] = entry["points"] / self.total_points if self.total_points else 0.0
        return out

    def domain_share(self) -> dict[str, float]:
        """Shares of the domain's points (as FairQuant counts them): certified, falsified, undecided, not run;
        ``proven_in_undecided`` is the part of the undecided share whose compared pairs lie in sub-boxes the
        engine had ruled out when it stopped (a lower bound on what more time would certify there)."""
        counts = self.counts()
        undecided = counts["unknown"]["share"] + counts["timeout"]["share"]
        proven = sum(p.points * float(p.details.get("proven_share", 0.0)) for p in self.partitions
                     if p.verdict not in (Verdict.VERIFIED, Verdict.FALSIFIED))
        return {"certified": counts["certified"]["share"], "falsified": counts["falsified"]["share"],
                "undecided": undecided, "not_run": counts["not run"]["share"],
                "proven_in_undecided": proven / self.total_points if self.total_points else 0.0}

    def methods(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.partitions:
            out[p.method] = out.get(p.method, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fairness", "model": self.model, "model_sha256": self.model_sha256,
                "property": self.property, "property_sha256": self.property_sha256, "engine": self.engine,
                "settings": self.settings, "verdict": self.verdict.value, "exit_code": self.exit_code,
                "seconds": round(self.seconds, 3), "total_partitions": self.total_partitions,
                "selected": self.selected, "total_points": self.total_points, "summary": self.counts(),
                "domain_share": self.domain_share(),
                "methods": self.methods(), "partitions": [p.record() for p in self.partitions]}

    def certificate(self) -> dict[str, Any]:
        """The evidence: hashes of model and property, and every run partition with its verdict and method.

        Partitions with verdict ``verified`` are proven fair (no pair in them gets different decisions);
        ``complete`` says whether they are all of the domain.
        """
        return {"certificate": "certprune fairness", "model": self.model, "model_sha256": self.model_sha256,
                "property": self.property, "property_sha256": self.property_sha256, "engine": self.engine,
                "settings": self.settings, "complete": self.verdict is Verdict.VERIFIED,
                "summary": self.counts(),
                "partitions": [{"partition": p.index, "box": p.box, "points": p.points,
                                "verdict": p.verdict.value, "method": p.method,
                                **({"counterexample": {"x": p.counterexample["x"],
                                                       "x_prime": p.counterexample["x_prime"]}}
                                   if p.counterexample else {})}
                               for p in self.partitions]}


def format_summary(report: FairnessReport, examples: int = 1) -> str:
    """The table the CLI prints: partitions and share of the domain per verdict, methods, a counterexample."""
    lines = [f"fairness: {report.model} against {report.property} (engine {report.engine})",
             f"partitions: {report.total_partitions} in the domain, {report.selected} selected, "
             f"{len(report.partitions)} decided or tried, in {report.seconds:.1f} s", "",
             f"{'verdict':<10} {'partitions':>10} {'share of domain':>16}"]
    for label, entry in report.counts().items():
        if entry["partitions"] or label in ("certified", "falsified", "unknown"):
            lines.append(f"{label:<10} {entry['partitions']:>10} {100 * entry['share']:>15.2f}%")
    share = report.domain_share()
    lines += ["", f"domain (points): certified {100 * share['certified']:.2f}%, falsified "
              f"{100 * share['falsified']:.2f}%, undecided {100 * share['undecided']:.2f}% (pairs proven in its "
              f"sub-boxes: {100 * share['proven_in_undecided']:.2f}% of the domain), not run "
              f"{100 * share['not_run']:.2f}%"]
    if report.partitions:
        times = sorted(p.seconds for p in report.partitions)
        lines += ["", f"time per partition: median {_time(times[len(times) // 2])}, max {_time(times[-1])}",
                  "methods: " + ", ".join(f"{m} {n}" for m, n in report.methods().items())]
    shown = [p for p in report.partitions if p.counterexample][:examples]
    for p in shown:
        cex = p.counterexample
        changed = {k: (v, cex["x_prime"][k]) for k, v in cex["x"].items() if cex["x_prime"][k] != v}
        lines += ["", f"counterexample in partition {p.index} (replayed on onnxruntime, found by {p.method}):",
                  f"  x  = {cex['x']}",
                  "  x' = x with " + ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items()),
                  f"  decisions {cex['decisions'][0]} vs {cex['decisions'][1]}, outputs "
                  f"{_short(cex['outputs'][0])} vs {_short(cex['outputs'][1])}"]
    lines += ["", f"result: {report.verdict.value.upper()} (exit {report.exit_code})"]
    return "\n".join(lines)


def _time(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _short(values: list) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"
