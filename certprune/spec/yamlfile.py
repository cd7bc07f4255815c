"""Reading YAML property files node by node, so every error can name the file, the line and the key."""
from __future__ import annotations

import difflib
import re
from typing import Any

import yaml

from certprune.errors import PropertyError


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1) with YAML 1.2's floats: ``1e-1`` and ``1.5e3`` (no dot, or no sign in
    the exponent) are numbers, as a user writing ``eps: 1e-1`` means, not strings."""


_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


class YamlReader:
    """The shared part of the property readers: composing the file, checked mappings, plain values."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.constructor = _Loader("")
        self.key_lines: dict[str, int] = {}  # the line of each key of the last mapping read

    def error(self, node: yaml.Node, message: str) -> PropertyError:
        return PropertyError(f"{self.source} line {node.start_mark.line + 1}: {message}")

    def compose(self, text: str) -> yaml.Node:
        try:
            node = yaml.compose(text, Loader=_Loader)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise PropertyError(f"{self.source}{where}: invalid YAML: {problem}") from error
        if node is None:
            raise PropertyError(f"{self.source}: the file is empty")
        return node

    def mapping(self, node: yaml.Node, allowed: tuple[str, ...], what: str) -> dict[str, yaml.Node]:
        """The mapping's value nodes by key; an unknown key (with the closest known one) or a repeated
        key is an error at its line."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping with keys {', '.join(allowed)}")
        keys: dict[str, yaml.Node] = {}
        self.key_lines = {}
        for key, value in node.value:
            name = self.value(key)
            if name not in allowed:
                close = difflib.get_close_matches(str(name), allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(allowed)})"
                raise self.error(key, f"unknown key '{name}'{hint}")
            if name in keys:
                raise self.error(key, f"key '{name}' appears twice")
            keys[name] = value
            self.key_lines[name] = key.start_mark.line + 1
        return keys

    def value(self, node: yaml.Node) -> Any:
        return self.constructor.construct_object(node, deep=True)
