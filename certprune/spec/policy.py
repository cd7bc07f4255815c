"""Release-gate policy files (YAML): which model may ship, on which checks, with which requirements.

```yaml
model: ../models/mnist_mlp_100x2.onnx      # relative paths are taken from the policy's folder
baseline: ../models/mnist_mlp_256x3.onnx   # optional: a model run on the same checks, or a gate JSON result
budget: 900                                # optional: seconds for the whole gate
checks:
  - name: robust                           # unique; one JUnit testcase per check
    certify: {data: mnist, eps: [0.01, 0.02], samples: 100, timeout: 20}
    budget: 300                            # optional: seconds for this check
    require:
      certified_accuracy: ">= 0.80"        # every eps, or per eps: {0.01: ">= 0.9", 0.02: ">= 0.8"}
      falsified: "<= 10%"
      undecided: "<= 0.05"
      vs_baseline: {certified_accuracy: ">= -0.02"}   # this model's figure minus the baseline's
  - name: fair-sex
    property: ../properties/german_fairness_sex.yaml  # a fairness YAML or a .vnnlib file
    require: {holds: true}                 # fairness also: certified_share, falsified_share, undecided_share
  - name: size
    facts: {data: mnist, samples: 1000}    # data (optional) for clean accuracy; parity on random inputs
    require: {parameters: "<= 100000", flops: "<= 100000", clean_accuracy: ">= 0.9", parity: true}
```
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from certprune.errors import PropertyError
from certprune.data import DATA_SETS as DATA_NAMES
from certprune.spec.text import read_text
from certprune.spec.yamlfile import YamlReader

TOP_KEYS = ("model", "baseline", "budget", "checks")
CHECK_KEYS = ("name", "certify", "property", "facts", "budget", "timeout", "jobs", "require")
KINDS = ("certify", "property", "facts")
CERTIFY_KEYS = ("data", "label", "features", "eps", "samples", "timeout")
FACTS_KEYS = ("data", "label", "features", "samples", "parity")
# the requirements each kind of check knows; booleans are compared for equality
METRICS = {
    "certify": ("certified_accuracy", "falsified", "undecided"),
    "fairness": ("holds", "certified_share", "falsified_share", "undecided_share"),
    "vnnlib": ("holds",),
    "facts": ("parameters", "flops", "clean_accuracy", "parity"),
}
BOOLEAN_METRICS = ("holds", "parity")
# shares of samples, partitions or points: a threshold beyond 1 (100%) is a typo, not a policy (down to -1: a
# change against a baseline, as ">= -0.02")
SHARE_METRICS = ("certified_accuracy", "falsified", "undecided", "certified_share", "falsified_share",
                 "undecided_share", "clean_accuracy")
_THRESHOLD = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Threshold:
    """``value OP number``; percentages are read as shares (``90%`` is 0.9)."""

    op: str
    number: float

    def holds(self, value: float) -> bool:
        return {">=": value >= self.number, "<=": value <= self.number, ">": value > self.number,
                "<": value < self.number, "==": value == self.number}[self.op]

    def __str__(self) -> str:
        return f"{self.op} {self.number:g}"


@dataclass(frozen=True)
class Requirement:
    """One rule: ``metric`` (at ``eps`` for certify checks with per-eps rules) meets ``threshold`` (a
    Threshold or a bool); ``vs_baseline`` rules compare the difference to the baseline's figure."""

    metric: str
    threshold: Threshold | bool
    eps: float | None = None
    vs_baseline: bool = False

    @property
    def label(self) -> str:
        name = self.metric + (f"@{self.eps:g}" if self.eps is not None else "")
        return f"{name} vs baseline" if self.vs_baseline else name


@dataclass(frozen=True)
class Check:
    """One named check: its kind (certify, fairness, vnnlib, facts), what it runs, and its requirements."""

    name: str
    kind: str
    line: int
    requirements: tuple[Requirement, ...]
    budget: float | None = None
    data: str | None = None  # a built-in data set name, or the path of the user's .npz/.csv/.parquet
    label: str | None = None  # the label column of a table
    features: tuple[str, ...] | None = None  # the model's input columns of a table, in order (default: the rest)
    eps: tuple[float, ...] = ()
    samples: int = 100
    timeout: float | None = None
    property: Path | None = None
    jobs: int = 1
    parity: bool = True


@dataclass(frozen=True)
class Policy:
    source: str
    model: Path
    checks: tuple[Check, ...]
    baseline: Path | None = None
    budget: float | None = None
    sha256: str = field(default="", compare=False)


def read_policy(path: str | Path) -> Policy:
    """Parse a policy file; errors are PropertyError naming the file, the line and the key."""
    from certprune.journal import content_sha256

    text = read_text(path, "policy file")
    policy = _Parser(str(path), Path(path).parent).parse(text)
    return Policy(policy.source, policy.model, policy.checks, policy.baseline, policy.budget, content_sha256(text))


class _Parser(YamlReader):
    def __init__(self, source: str, base: Path) -> None:
        super().__init__(source)
        self.base = base

    def parse(self, text: str) -> Policy:
        keys = self.mapping(self.compose(text), TOP_KEYS, "the policy")
        for name in ("model", "checks"):
            if name not in keys:
                raise PropertyError(f"{self.source}: missing required key '{name}'")
        model = self.path(keys["model"], "model", (".onnx",))
        baseline = self.path(keys["baseline"], "baseline", (".onnx", ".json")) if "baseline" in keys else None
        budget = self.positive(keys["budget"], "budget") if "budget" in keys else None
        node = keys["checks"]
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.error(node, "checks must be a non-empty list of checks")
        checks = [self.check(item) for item in node.value]
        names = [c.name for c in checks]
        for check in checks:
            if names.count(check.name) > 1:
                raise PropertyError(f"{self.source} line {check.line}: check name '{check.name}' is used twice")
            if baseline is None and any(r.vs_baseline for r in check.requirements):
                raise PropertyError(f"{self.source} line {check.line}: check '{check.name}' has vs_baseline "
                                    "rules but the policy names no baseline")
        return Policy(self.source, model, tuple(checks), baseline, budget)

    def check(self, node: yaml.Node) -> Check:
        keys = self.mapping(node, CHECK_KEYS, "a check")
        line = node.start_mark.line + 1
        if "name" not in keys:
            raise self.error(node, "a check needs a 'name'")
        name = self.value(keys["name"])
        if not isinstance(name, str) or not name.strip():
            raise self.error(keys["name"], f"name must be a non-empty string, got {name!r}")
        kinds = [k for k in KINDS if k in keys]
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            raise self.error(node, f"check '{name}' needs exactly one of certify, property, facts (got {found})")
        if "require" not in keys:
            raise self.error(node, f"check '{name}' has no 'require': say what it must meet")
        common = {"name": name, "line": line,
                  "budget": self.positive(keys["budget"], "budget") if "budget" in keys else None}
        kind = kinds[0]
        if kind == "certify":
            return self.certify_check(keys, common)
        if kind == "facts":
            return self.facts_check(keys, common)
        return self.property_check(keys, common)

    def certify_check(self, keys: dict, common: dict) -> Check:
        spec = self.mapping(keys["certify"], CERTIFY_KEYS, "certify")
        if "data" not in spec or "eps" not in spec:
            raise self.error(keys["certify"], "certify needs 'data' and 'eps'")
        data = self.data_name(spec["data"])
        eps_value = self.value(spec["eps"])
        eps_list = eps_value if isinstance(eps_value, list) else [eps_value]
        if not eps_list or not all(_number(e) and e >= 0 for e in eps_list):
            raise self.error(spec["eps"], f"eps must be a number >= 0 or a list of them, got {eps_value!r}")
        samples = self.count(spec["samples"], "samples") if "samples" in spec else 100
        timeout = self.positive(spec["timeout"], "timeout") if "timeout" in spec else 20.0
        eps = tuple(float(e) for e in eps_list)
        requirements = self.requirements(keys["require"], "certify", eps)
        return Check(kind="certify", requirements=requirements, data=data, label=self.label(spec),
                     features=self.features(spec), eps=eps, samples=samples, timeout=timeout, **common)

    def facts_check(self, keys: dict, common: dict) -> Check:
        spec = self.mapping(keys["facts"], FACTS_KEYS, "facts") if self.value(keys["facts"]) else {}
        data = self.data_name(spec["data"]) if "data" in spec else None
        samples = self.count(spec["samples"], "samples") if "samples" in spec else 1000
        parity = self.boolean(spec["parity"], "parity") if "parity" in spec else True
        requirements = self.requirements(keys["require"], "facts", ())
        if data is None and any(r.metric == "clean_accuracy" for r in requirements):
            raise self.error(keys["facts"], "clean_accuracy needs 'data' in facts")
        return Check(kind="facts", requirements=requirements, data=data, label=self.label(spec),
                     features=self.features(spec), samples=samples, parity=parity, **common)

    def property_check(self, keys: dict, common: dict) -> Check:
        path = self.path(keys["property"], "property", (".yaml", ".yml", ".vnnlib"))
        kind = "vnnlib" if path.suffix == ".vnnlib" else "fairness"
        if kind == "fairness" and _yaml_kind(path) == "robustness":
            raise self.error(keys["property"], f"{path.name} is a robustness property: a gate measures "
                                               "robustness with a certify check (certify: {data, eps, ...})")
        timeout = self.positive(keys["timeout"], "timeout") if "timeout" in keys else None
        jobs = self.count(keys["jobs"], "jobs") if "jobs" in keys else 1
        requirements = self.requirements(keys["require"], kind, ())
        return Check(kind=kind, requirements=requirements, property=path, timeout=timeout, jobs=jobs, **common)

    # -- requirements ----------------------------------------------------------------------------------

    def requirements(self, node: yaml.Node, kind: str, eps: tuple[float, ...]) -> tuple[Requirement, ...]:
        known = METRICS[kind]
        keys = self.mapping(node, known + ("vs_baseline",), f"require of a {kind} check")
        if not keys:
            raise self.error(node, "require must name at least one requirement")
        out = []
        for metric, value in keys.items():
            if metric == "vs_baseline":
                numeric = tuple(m for m in known if m not in BOOLEAN_METRICS)
                for name, rule in self.mapping(value, numeric, "vs_baseline").items():
                    out.append(Requirement(name, self.threshold(rule, name), vs_baseline=True))
            elif kind == "certify" and isinstance(value, yaml.MappingNode):
                out.extend(self.per_eps(metric, value, eps))
            else:
                out.append(Requirement(metric, self.rule(value, metric)))
        return tuple(out)

    def per_eps(self, metric: str, node: yaml.MappingNode, eps: tuple[float, ...]) -> list[Requirement]:
        out = []
        for key, value in node.value:
            at = self.value(key)
            if not _number(at) or not any(math.isclose(at, e) for e in eps):
                raise self.error(key, f"{metric}: {at!r} is not one of the check's eps ({', '.join(map(str, eps))})")
            out.append(Requirement(metric, self.threshold(value, metric), eps=float(at)))
        return out

    def rule(self, node: yaml.Node, metric: str) -> Threshold | bool:
        if metric in BOOLEAN_METRICS:
            return self.boolean(node, metric)
        return self.threshold(node, metric)

    def threshold(self, node: yaml.Node, metric: str) -> Threshold:
        text = self.value(node)
        match = _THRESHOLD.match(str(text)) if isinstance(text, str) else None
        if match is None:
            raise self.error(node, f"{metric}: threshold {text!r} must read like \">= 0.8\", \"<= 5%\" or "
                                   "\"> -0.02\" (quote it in YAML)")
        op, number, percent = match.groups()
        value = float(number) / (100.0 if percent else 1.0)
        if metric in SHARE_METRICS and not -1.0 <= value <= 1.0:
            raise self.error(node, f"{metric}: threshold {text!r} is a share: at most 1 (100%), at least -1 as a "
                                   "change against a baseline")
        return Threshold(op, value)

    # -- values ----------------------------------------------------------------------------------------

    def path(self, node: yaml.Node, key: str, suffixes: tuple[str, ...]) -> Path:
        value = self.value(node)
        if not isinstance(value, str) or not value:
            raise self.error(node, f"{key} must be a file path, got {value!r}")
        path = Path(os.path.normpath(self.base / value))  # an absolute value replaces the base
        if path.suffix.lower() not in suffixes:
            raise self.error(node, f"{key} must be a {' or '.join(suffixes)} file, got {value}")
        if not path.is_file():
            raise self.error(node, f"{key}: no such file {path}")
        return path

    def data_name(self, node: yaml.Node) -> str:
        """A built-in data set's name, or the path (from the policy's folder) of the user's data file."""
        value = self.value(node)
        if isinstance(value, str) and Path(value).suffix.lower() in (".npz", ".csv", ".parquet"):
            return str(self.path(node, "data", (".npz", ".csv", ".parquet")))
        if value not in DATA_NAMES:
            raise self.error(node, f"unknown data set {value!r} (known: {', '.join(DATA_NAMES)}, or a .npz, "
                                   ".csv or .parquet file)")
        return value

    def label(self, spec: dict) -> str | None:
        if "label" not in spec:
            return None
        value = self.value(spec["label"])
        if not isinstance(value, str):
            raise self.error(spec["label"], f"label must be a column name, got {value!r}")
        return value

    def features(self, spec: dict) -> tuple[str, ...] | None:
        """The model's input columns of a table (as ``--features``): a list of column names."""
        if "features" not in spec:
            return None
        value = self.value(spec["features"])
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.error(spec["features"], f"features must be a list of column names, got {value!r}")
        return tuple(value)

    def positive(self, node: yaml.Node, key: str) -> float:
        value = self.value(node)
        if not _number(value) or not value > 0:
            raise self.error(node, f"{key} must be a number of seconds > 0, got {value!r}")
        return float(value)

    def count(self, node: yaml.Node, key: str) -> int:
        value = self.value(node)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self.error(node, f"{key} must be an integer > 0, got {value!r}")
        return value

    def boolean(self, node: yaml.Node, key: str) -> bool:
        value = self.value(node)
        if not isinstance(value, bool):
            raise self.error(node, f"{key} must be true or false, got {value!r}")
        return value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _yaml_kind(path: Path) -> object:
    """The ``kind`` a YAML property file declares (None when it cannot be read: its own reader says why)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return data.get("kind") if isinstance(data, dict) else None
