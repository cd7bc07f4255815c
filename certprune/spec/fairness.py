"""Individual-fairness property files (YAML): which inputs must get the same decision, over which domain.

A classifier is individually fair on a domain when no two inputs that differ only in the protected
attribute(s) (and, where the file says so, by at most a tolerance in some relaxed attributes) get
different decisions. The file, one mapping (keys other than ``attributes`` and ``protected`` optional)::

    kind: fairness                 # required
    description: German credit, sex
    decision:                      # default {output: 0, threshold: 0.0}
      output: 0                    #   which logit decides;
      threshold: 0.0               #   decision = 1 when logit > threshold (on the logit, before any sigmoid)
    # decision: argmax             # or: the class with the largest logit (multi-output models)
    attributes:                    # required, one per model input, IN THE MODEL'S INPUT ORDER
      - {name: age, type: int, range: [10, 100]}     # type int (integer values) or real; range inclusive
      - {name: sex, type: int, range: [0, 1]}
      - {name: income, type: real, range: [0.0, 5.0]}
    protected: [sex]               # required: attributes whose value must not matter; all values in range,
    # protected: {race: [2, 4]}    #   or only these values (compared pairwise)
    relaxed: {age: 1}              # optional: x' may also differ by at most this much in these attributes
    partition: {max_values: 10}    # optional (default: one partition): split every non-protected integer
                                   #   attribute with more than 10 values into chunks of at most 10 values
    # partition:                   # or explicit chunks that must cover the attribute's range exactly
    #   ranges: {age: [[10, 40], [41, 100]]}
    timeout: {partition: 30, total: 3600}   # seconds; a bare number is the per-partition limit
    engine: auto                   # auto (bounds, search, MILP, Z3) or z3 (Fairify-style SMT per partition)

The property quantifies over pairs ``(x, x')``: ``x`` in the domain (the attribute ranges; protected
attributes take their listed values), ``x'`` equal to ``x`` except that at least one protected attribute
differs (both values listed) and each relaxed attribute moves by at most its tolerance (staying in its range).
A counterexample is such a pair with ``decision(x) != decision(x')``.

Every error is a PropertyError naming the file, the line and the key, e.g.
``fair.yaml line 7: unknown key 'protcted' (did you mean 'protected'?)``. Whether the attributes match a
model (count, output index) is checked by ``FairnessProperty.check_model``.
"""
from __future__ import annotations

import difflib
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from certprune.errors import PropertyError
from certprune.spec.text import read_text
from certprune.spec.yamlfile import YamlReader

TOP_KEYS = ("kind", "description", "decision", "attributes", "protected", "relaxed", "partition", "timeout",
            "engine")
ATTRIBUTE_KEYS = ("name", "type", "range")
DECISION_KEYS = ("output", "threshold")
PARTITION_KEYS = ("max_values", "ranges")
TIMEOUT_KEYS = ("partition", "total")
ENGINES = ("auto", "z3")
TYPES = ("int", "real")
DEFAULT_PARTITION_TIMEOUT = 30.0


@dataclass(frozen=True)
class Attribute:
    """One model input: its name, whether it takes integer values, and its inclusive range."""

    name: str
    integer: bool
    lower: float
    upper: float
    line: int = 0

    @property
    def values(self) -> int | None:
        """How many values an integer attribute takes (None for a real one)."""
        return int(self.upper - self.lower) + 1 if self.integer else None


@dataclass(frozen=True)
class Decision:
    """``threshold``: class 1 iff logit[output] > threshold, else 0. ``argmax``: the first largest logit."""

    mode: str = "threshold"
    output: int = 0
    threshold: float = 0.0
    line: int = 0


@dataclass(frozen=True)
class PartitionRule:
    """Fairify's ``max_values`` rule, or explicit chunks per attribute (each list covers its range)."""

    max_values: int | None = None
    ranges: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=lambda: MappingProxyType({}))

    def describe(self) -> str:
        if self.max_values is not None:
            return f"max_values: {self.max_values}"
        if self.ranges:
            return "ranges: " + ", ".join(f"{k} ({len(v)} chunks)" for k, v in self.ranges.items())
        return "none"


@dataclass(frozen=True, eq=False)
class FairnessProperty:
    """A parsed fairness file. ``protected`` maps each protected attribute to its compared values."""

    source: str
    attributes: tuple[Attribute, ...]
    protected: Mapping[str, tuple[float, ...]]
    relaxed: Mapping[str, float]
    decision: Decision
    partition: PartitionRule
    timeout_partition: float | None = DEFAULT_PARTITION_TIMEOUT
    timeout_total: float | None = None
    engine: str = "auto"
    description: str = ""
    sha256: str = ""
    attributes_line: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def check_model(self, n_inputs: int, n_outputs: int, output_transform: str | None = None) -> None:
        """Raise PropertyError unless a model with these inputs and outputs can be checked against this file."""
        if len(self.attributes) != n_inputs:
            raise PropertyError(f"{self.source} line {self.attributes_line}: 'attributes' lists "
                                f"{len(self.attributes)} attributes but the model takes {n_inputs} inputs "
                                "(list one per input, in the model's input order)")
        d = self.decision
        where = f"{self.source} line {d.line}" if d.line else self.source
        if d.mode == "argmax" and n_outputs < 2:
            raise PropertyError(f"{where}: decision 'argmax' needs a model with several outputs, this one has "
                                f"{n_outputs}; use decision: {{output: 0, threshold: 0.0}}")
        if d.mode == "threshold" and not 0 <= d.output < n_outputs:
            raise PropertyError(f"{where}: decision output {d.output} is not an output of a model with "
                                f"{n_outputs} output(s)")
        if d.mode == "argmax" and output_transform == "sigmoid":
            raise PropertyError(f"{where}: the model ends in a sigmoid, whose float32 outputs saturate to equal "
                                "values for different logits, so argmax of its outputs is not decided by the "
                                "logits; export the model without the final Sigmoid")
        if d.mode == "threshold" and output_transform == "softmax":
            raise PropertyError(f"{where}: the model ends in a softmax, so a threshold on one logit cannot be "
                                "read from its outputs; use decision: argmax")
        if d.mode == "threshold" and n_outputs > 1:
            import warnings

            warnings.warn(f"{where}: the decision reads output {d.output} alone (class 1 iff it is > {d.threshold:g}) "
                          f"of a model with {n_outputs} outputs; a classifier's decision is usually "
                          "'decision: argmax'", stacklevel=2)


def load_fairness_property(path: str | Path) -> FairnessProperty:
    """Read and check a fairness YAML file; errors are PropertyError naming the file, key and line."""
    return parse_fairness(read_text(path), str(path))


def parse_fairness(text: str, source: str = "<string>") -> FairnessProperty:
    """Parse fairness YAML text; ``source`` names it in errors."""
    return _Parser(source).parse(text)


# ---------------------------------------------------------------------------------------------------
# Parsing: yaml.compose keeps every node's line, so each error names the key and where it is.


class _Parser(YamlReader):
    def parse(self, text: str) -> FairnessProperty:
        root = self.compose(text)
        keys = self.mapping(root, TOP_KEYS, "the file")
        attributes_line = self.key_lines.get("attributes", 0)
        decision_line = self.key_lines.get("decision", 0)
        for name in ("kind", "attributes", "protected"):
            if name not in keys:
                raise self.error(root, f"missing required key '{name}'")
        kind = self.value(keys["kind"])
        if kind != "fairness":
            raise self.error(keys["kind"], f"kind must be 'fairness', got {kind!r}")
        attributes = self.attributes(keys["attributes"])
        by_name = {a.name: a for a in attributes}
        protected = self.protected(keys["protected"], by_name)
        relaxed = self.relaxed(keys.get("relaxed"), by_name, protected)
        partition = self.partition(keys.get("partition"), by_name, protected)
        timeouts = self.timeouts(keys.get("timeout"))
        engine = self.choice(keys["engine"], "engine", ENGINES) if "engine" in keys else "auto"
        description = str(self.value(keys["description"])) if "description" in keys else ""
        decision = self.decision(keys.get("decision"), decision_line)
        ordered = MappingProxyType({a.name: protected[a.name] for a in attributes if a.name in protected})
        return FairnessProperty(self.source, attributes, ordered, MappingProxyType(relaxed), decision, partition,
                                *timeouts, engine, description, hashlib.sha256(text.encode()).hexdigest(),
                                attributes_line)

    # -- sections ----------------------------------------------------------------------------------

    def attributes(self, node: yaml.Node) -> tuple[Attribute, ...]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.error(node, "attributes must be a non-empty list of {name, type, range}, "
                                   "one per model input in the model's input order")
        result: list[Attribute] = []
        seen: set[str] = set()
        for item in node.value:
            keys = self.mapping(item, ATTRIBUTE_KEYS, "each attribute")
            for name in ATTRIBUTE_KEYS:
                if name not in keys:
                    raise self.error(item, f"attribute is missing key '{name}'")
            name = self.value(keys["name"])
            if not isinstance(name, str) or not name:
                raise self.error(keys["name"], f"attribute name must be a non-empty string, got {name!r}")
            if name in seen:
                raise self.error(keys["name"], f"attribute '{name}' appears twice")
            seen.add(name)
            integer = self.choice(keys["type"], f"type of '{name}'", TYPES) == "int"
            lo, hi = self.interval(keys["range"], f"range of '{name}'", integer)
            result.append(Attribute(name, integer, lo, hi, item.start_mark.line + 1))
        return tuple(result)

    def protected(self, node: yaml.Node, by_name: dict[str, Attribute]) -> dict[str, tuple[float, ...]]:
        entries: list[tuple[yaml.Node, yaml.Node | None]] = []  # (name node, values node or None)
        if isinstance(node, yaml.MappingNode):
            entries = list(node.value)
        elif isinstance(node, yaml.SequenceNode) and node.value:
            for item in node.value:
                if isinstance(item, yaml.MappingNode) and len(item.value) == 1:
                    entries.append(item.value[0])
                elif isinstance(item, yaml.ScalarNode):
                    entries.append((item, None))
                else:
                    raise self.error(item, "each protected entry is a name or {name: [values]}")
        else:
            raise self.error(node, "protected must be a non-empty list of attribute names, or a mapping "
                                   "name -> [values to compare]")
        result: dict[str, tuple[float, ...]] = {}
        for key, values in entries:
            attribute = self.known(key, by_name, "protected attribute")
            if attribute.name in result:
                raise self.error(key, f"protected attribute '{attribute.name}' appears twice")
            result[attribute.name] = self.protected_values(values, attribute, key)
        return result

    def protected_values(self, node: yaml.Node | None, attribute: Attribute, key: yaml.Node) -> tuple[float, ...]:
        if node is None or (isinstance(node, yaml.ScalarNode) and self.value(node) in (None, "all")):
            if not attribute.integer:
                raise self.error(key, f"protected attribute '{attribute.name}' is real: list the values to compare")
            values = tuple(float(v) for v in range(int(attribute.lower), int(attribute.upper) + 1))
        else:
            if not isinstance(node, yaml.SequenceNode):
                raise self.error(node, f"values of '{attribute.name}' must be a list of numbers")
            values = tuple(sorted({self.number(v, f"value of '{attribute.name}'", attribute.integer)
                                   for v in node.value}))
            for value in values:
                if not attribute.lower <= value <= attribute.upper:
                    raise self.error(node, f"value {_fmt(value)} of '{attribute.name}' lies outside its range "
                                           f"[{_fmt(attribute.lower)}, {_fmt(attribute.upper)}]")
        if len(values) < 2:
            raise self.error(node if node is not None else key,
                             f"protected attribute '{attribute.name}' needs at least two values to compare")
        return values

    def relaxed(self, node: yaml.Node | None, by_name: dict[str, Attribute], protected) -> dict[str, float]:
        if node is None or (isinstance(node, yaml.ScalarNode) and self.value(node) is None):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, "relaxed must be a mapping attribute -> tolerance, e.g. {age: 1}")
        result: dict[str, float] = {}
        for key, value in node.value:
            attribute = self.known(key, by_name, "relaxed attribute")
            if attribute.name in protected:
                raise self.error(key, f"'{attribute.name}' is protected; it cannot also be relaxed")
            if attribute.name in result:
                raise self.error(key, f"relaxed attribute '{attribute.name}' appears twice")
            tolerance = self.number(value, f"tolerance of '{attribute.name}'", attribute.integer)
            if tolerance < 0:
                raise self.error(value, f"tolerance of '{attribute.name}' must be >= 0, got {_fmt(tolerance)}")
            if tolerance > 0:
                result[attribute.name] = tolerance
        return {a: result[a] for a in by_name if a in result}  # input order

    def partition(self, node: yaml.Node | None, by_name: dict[str, Attribute], protected) -> PartitionRule:
        if node is None:
            return PartitionRule()
        keys = self.mapping(node, PARTITION_KEYS, "partition")
        if len(keys) != 1:
            raise self.error(node, "partition takes exactly one of max_values or ranges")
        if "max_values" in keys:
            n = self.number(keys["max_values"], "max_values", True)
            if n < 1:
                raise self.error(keys["max_values"], f"max_values must be >= 1, got {_fmt(n)}")
            return PartitionRule(max_values=int(n))
        ranges_node = keys["ranges"]
        if not isinstance(ranges_node, yaml.MappingNode):
            raise self.error(ranges_node, "ranges must be a mapping attribute -> [[lo, hi], ...]")
        ranges: dict[str, tuple[tuple[float, float], ...]] = {}
        for key, value in ranges_node.value:
            attribute = self.known(key, by_name, "partitioned attribute")
            if attribute.name in protected:
                raise self.error(key, f"'{attribute.name}' is protected; protected values are compared, "
                                      "not partitioned")
            if attribute.name in ranges:
                raise self.error(key, f"ranges of '{attribute.name}' appear twice")
            ranges[attribute.name] = self.chunks(value, attribute)
        return PartitionRule(ranges=MappingProxyType({a: ranges[a] for a in by_name if a in ranges}))

    def chunks(self, node: yaml.Node, attribute: Attribute) -> tuple[tuple[float, float], ...]:
        what = f"ranges of '{attribute.name}'"
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.error(node, f"{what} must be a non-empty list of [lo, hi]")
        chunks = sorted(self.interval(item, f"a chunk of {what}", attribute.integer) for item in node.value)
        step = 1 if attribute.integer else 0
        expected = attribute.lower
        for lo, hi in chunks:
            if lo != expected:
                problem = f"gap before {_fmt(lo)}" if lo > expected else f"overlap at {_fmt(lo)}"
                raise self.error(node, f"{what} must cover [{_fmt(attribute.lower)}, {_fmt(attribute.upper)}] "
                                       f"without gaps or overlaps ({problem})")
            expected = hi + step
        if expected - step != attribute.upper:
            raise self.error(node, f"{what} must cover [{_fmt(attribute.lower)}, {_fmt(attribute.upper)}]; "
                                   f"they end at {_fmt(expected - step)}")
        return tuple(chunks)

    def timeouts(self, node: yaml.Node | None) -> tuple[float | None, float | None]:
        if node is None:
            return DEFAULT_PARTITION_TIMEOUT, None
        if isinstance(node, yaml.ScalarNode):
            return self.positive(node, "timeout"), None
        keys = self.mapping(node, TIMEOUT_KEYS, "timeout")
        per = self.positive(keys["partition"], "timeout partition") if "partition" in keys else \
            DEFAULT_PARTITION_TIMEOUT
        total = self.positive(keys["total"], "timeout total") if "total" in keys else None
        return per, total

    def decision(self, node: yaml.Node | None, line: int) -> Decision:
        if node is None:
            return Decision()
        if isinstance(node, yaml.ScalarNode):
            if self.value(node) != "argmax":
                raise self.error(node, f"decision must be 'argmax' or {{output: k, threshold: t}}, "
                                       f"got {self.value(node)!r}")
            return Decision("argmax", line=line)
        keys = self.mapping(node, DECISION_KEYS, "decision")
        output = int(self.number(keys["output"], "output", True)) if "output" in keys else 0
        if output < 0:
            raise self.error(keys["output"], f"output must be >= 0, got {output}")
        threshold = self.number(keys["threshold"], "threshold", False) if "threshold" in keys else 0.0
        return Decision("threshold", output, threshold, line)

    # -- values ------------------------------------------------------------------------------------

    def known(self, node: yaml.Node, by_name: dict[str, Attribute], what: str) -> Attribute:
        name = self.value(node)
        if name not in by_name:
            close = difflib.get_close_matches(str(name), list(by_name), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.error(node, f"{what} '{name}' is not one of the attributes{hint}")
        return by_name[name]

    def choice(self, node: yaml.Node, what: str, options: tuple[str, ...]) -> str:
        value = self.value(node)
        if value not in options:
            raise self.error(node, f"{what} must be one of {', '.join(options)}, got {value!r}")
        return value

    def number(self, node: yaml.Node, what: str, integer: bool) -> float:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not _is_number(value) or not math.isfinite(value):
            raise self.error(node, f"{what} must be {'an integer' if integer else 'a number'}, "
                                   f"got {_show(node, value)}")
        if integer and value != int(value):
            raise self.error(node, f"{what} must be an integer, got {value!r}")
        return float(value)

    def positive(self, node: yaml.Node, what: str) -> float:
        value = self.number(node, what, False)
        if value <= 0:
            raise self.error(node, f"{what} must be > 0 seconds, got {_fmt(value)}")
        return value

    def interval(self, node: yaml.Node, what: str, integer: bool) -> tuple[float, float]:
        if not isinstance(node, yaml.SequenceNode) or len(node.value) != 2:
            raise self.error(node, f"{what} must be [lo, hi] with lo <= hi")
        lo, hi = (self.number(item, what, integer) for item in node.value)
        if lo > hi:
            raise self.error(node, f"{what} must be [lo, hi] with lo <= hi, got [{_fmt(lo)}, {_fmt(hi)}]")
        return lo, hi


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _show(node: yaml.Node, value: Any) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return repr(value)
