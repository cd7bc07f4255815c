"""Partitions cover the domain exactly once; their point counts add up."""
from __future__ import annotations

import itertools

from tests.fairness.fairnets import property_text

from certprune.fairness.partition import Partitioning
from certprune.spec.fairness import parse_fairness


def test_partitions_tile_the_domain():
    prop = parse_fairness(property_text(partition="{max_values: 2}"))
    parts = Partitioning(prop)
    assert len(parts) == 2 * 3 * 3  # a: 0..3 -> 2 chunks; b: -2..2 -> 3; c: 0..4 -> 3; sex protected
    assert parts.split_attributes() == ["a", "b", "c"]
    seen = {}
    for p in parts:
        axes = [range(int(lo), int(hi) + 1) for lo, hi in zip(p.lower, p.upper)]
        points = list(itertools.product(*axes))
        assert len(points) == p.points
        for x in points:
            assert x not in seen
            seen[x] = p.index
    assert len(seen) == 4 * 5 * 5 * 2 == parts.total_points == sum(p.points for p in parts)
    assert parts[3].ranges(prop.names) == {"a": [0, 1], "b": [0, 1], "c": [0, 1], "sex": [0, 1]}


def test_explicit_ranges_and_protected_values():
    prop = parse_fairness(property_text(partition="{ranges: {b: [[-2, -2], [-1, 2]]}}",
                                        protected="{c: [1, 3]}"))
    parts = Partitioning(prop)
    assert len(parts) == 2
    assert parts[0].points == 4 * 1 * 2 * 2 and parts[1].points == 4 * 4 * 2 * 2  # c counts its 2 values
    assert (parts[0].lower[2], parts[0].upper[2]) == (1, 3)


def test_with_a_real_attribute_the_partitions_points_add_up_to_the_domains():
    """A real attribute's length is a measure: rounding each partition's count up made the shares of a
    domain add up to more than 100% (a negative 'not run')."""
    import math

    from certprune.fairness.report import FairnessReport, PartitionResult
    from certprune.types import Verdict

    text = """
kind: fairness
decision: argmax
attributes:
  - {name: age, type: int, range: [18, 79]}
  - {name: sex, type: int, range: [0, 1]}
  - {name: income, type: real, range: [0.2583, 99.8975]}
protected: [sex]
partition: {max_values: 2}
"""
    parts = Partitioning(parse_fairness(text))
    assert math.isclose(sum(p.points for p in parts), parts.total_points, rel_tol=1e-12)
    results = tuple(PartitionResult(p.index, Verdict.VERIFIED, "bounds", 0.0, p.points, {}) for p in parts)
    report = FairnessReport("m", "", "p", "", "auto", {}, len(parts), len(parts), parts.total_points, results, 0.0)
    counts = report.counts()
    assert counts["not run"]["points"] >= 0
    assert math.isclose(sum(entry["share"] for entry in counts.values()), 1.0, rel_tol=1e-9)
