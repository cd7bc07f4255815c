"""Imports go one way: each part of certprune imports only parts below it, and nothing imports the CLI.

The ranks are the architecture of STYLE.md: shared types at the bottom, then the network and its I/O,
then property readers, bounds and encodings, then the three engines (branch and bound, fairness,
pruning) which do not import each other, and the CLI on top. Only ``certprune/__init__.py`` sees all.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "certprune"
RANKS = {
    "errors": 0, "floats": 0, "version": 0, "deadline": 0, "progress": 0, "signals": 0,
    "types": 1,
    "network": 2, "journal": 2, "data": 2, "datafile": 2, "runtime": 2, "cluster": 2, "fastconv": 2,
    "fastalpha": 3, "realcheck": 3,
    "fold": 3,
    "onnx_io": 4, "torch_io": 4, "parity": 4,
    "spec": 5, "bounds": 5, "smt": 5,
    "bab": 6, "fairness": 6, "prune": 6, "fastpath": 6,
    "gate": 7, "report": 7, "decide": 7,
    "cli": 8,
}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def part_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_parts(path: Path) -> set[str]:
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        parts |= {n.split(".")[1] for n in names if n.startswith("certprune.")}
    return parts


def test_every_part_has_a_rank():
    assert {part_of(p) for p in MODULES} <= set(RANKS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_only(path):
    own = part_of(path)
    wrong = {p for p in imported_parts(path) if p != own and RANKS[p] >= RANKS[own]}
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}, which are not below {own}"
