"""The domain of a fairness property cut into boxes (partitions), enumerated lazily in a fixed order.

Partitions are the product of per-attribute chunk lists: an attribute split by the property's rule
contributes its chunks, any other attribute its whole range, a protected attribute the hull of its compared
values (those values are compared pairwise, never split). Partition ``i`` is found by mixed-radix decoding,
so properties with a million partitions cost nothing until they are run. The size of a partition is its
number of integer points (for real attributes, the length of their range, or 1 for a single value).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

from certprune.spec.fairness import Attribute, FairnessProperty

Interval = tuple[float, float]


@dataclass(frozen=True)
class Partition:
    """One box: ``lower``/``upper`` per attribute, in input order; ``points`` counts the inputs ``x`` in it."""

    index: int
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    points: int | float  # a measure when an attribute is real

    def ranges(self, names: tuple[str, ...]) -> dict[str, list[float]]:
        return {name: [_plain(lo), _plain(hi)] for name, lo, hi in zip(names, self.lower, self.upper)}


class Partitioning:
    """All partitions of a property; ``len``, indexing and iteration."""

    def __init__(self, prop: FairnessProperty) -> None:
        self.prop = prop
        self.chunks: tuple[tuple[Interval, ...], ...] = tuple(_chunks(prop, a) for a in prop.attributes)
        self.radix = tuple(len(c) for c in self.chunks)

    def __len__(self) -> int:
        return math.prod(self.radix)

    def __getitem__(self, index: int) -> Partition:
        if not 0 <= index < len(self):
            raise IndexError(f"partition {index} out of range (there are {len(self)})")
        digits = []
        rest = index
        for base in reversed(self.radix):  # the first attribute varies slowest
            rest, digit = divmod(rest, base)
            digits.append(digit)
        picked = [chunks[d] for chunks, d in zip(self.chunks, reversed(digits))]
        lower = tuple(lo for lo, _ in picked)
        upper = tuple(hi for _, hi in picked)
        return Partition(index, lower, upper, box_points(self.prop, lower, upper))

    def __iter__(self) -> Iterator[Partition]:
        return (self[i] for i in range(len(self)))

    @property
    def total_points(self) -> int | float:
        """Points of the whole domain (the sum over all partitions)."""
        return box_points(self.prop, tuple(a.lower for a in self.prop.attributes),
                          tuple(a.upper for a in self.prop.attributes))

    def split_attributes(self) -> list[str]:
        return [a.name for a, c in zip(self.prop.attributes, self.chunks) if len(c) > 1]


def box_points(prop: FairnessProperty, lower, upper) -> int | float:
    """Inputs ``x`` in the box: integer points (protected: listed values inside), times real lengths. With a
    real attribute the count is a measure, not rounded: partitions' counts must add up to the domain's (they
    were rounded up each, and the shares summed to more than 100%)."""
    count = 1
    for attribute, lo, hi in zip(prop.attributes, lower, upper):
        values = prop.protected.get(attribute.name)
        if values is not None:
            count *= sum(1 for v in values if lo <= v <= hi)
        elif attribute.integer:
            count *= int(hi - lo) + 1
        elif hi > lo:
            count *= hi - lo
    return count


def _chunks(prop: FairnessProperty, attribute: Attribute) -> tuple[Interval, ...]:
    values = prop.protected.get(attribute.name)
    if values is not None:
        return ((min(values), max(values)),)
    explicit = prop.partition.ranges.get(attribute.name)
    if explicit is not None:
        return tuple(explicit)
    size = prop.partition.max_values
    if size is None or not attribute.integer or attribute.values <= size:
        return ((attribute.lower, attribute.upper),)
    # Fairify's rule: consecutive chunks of `size` values from the low end, the last one shorter.
    starts = range(int(attribute.lower), int(attribute.upper) + 1, size)
    return tuple((float(s), float(min(s + size - 1, attribute.upper))) for s in starts)


def _plain(value: float):
    return int(value) if float(value).is_integer() else float(value)
