"""VNN-LIB 1.0 properties (the VNN-COMP format) read into input boxes and linear output constraints.

A VNN-LIB file describes a COUNTEREXAMPLE: the instance is *sat* (the property is violated) when some
input ``x`` in one of the input boxes gives outputs ``y`` satisfying one of that box's conjunctions
``A @ y <= b``. The file is read as the conjunction of its ``assert`` commands and expanded into
disjunctive normal form; the cases are grouped by input box, so the result is::

    VnnlibProperty.disjuncts = (Disjunct(lower, upper, ((A1, b1), (A2, b2), ...)), ...)
    violated  <=>  exists disjunct d, x in [d.lower, d.upper], (A, b) in d.constraints: A @ net(x) <= b

Supported: ``declare-const`` of ``X_i`` / ``Y_j`` of sort ``Real``; ``assert`` over ``and``, ``or``,
``<=``, ``>=``, ``<``, ``>``, ``=`` (chained comparisons as in SMT-LIB); linear terms with numbers,
``+``, ``-`` (unary and n-ary), ``*`` by constants and ``/`` by a constant; comments after ``;``.
Strict comparisons are read as non-strict, as VNN-COMP does. Constraints on inputs must bound a single
input (so the input set is a union of boxes); constraints on outputs may be any linear inequality over
the ``Y_j``; a constraint may not mix inputs and outputs. Every input needs a lower and an upper bound.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from certprune.errors import PropertyError
from certprune.spec.text import read_text

Constraint = tuple[np.ndarray, np.ndarray]  # (A, b) meaning A @ y <= b, a conjunction of rows
MAX_CASES = 100_000  # disjunctive normal form larger than this is refused rather than built


@dataclass(frozen=True, eq=False)
class Disjunct:
    """One input box (flat float64 vectors) and the disjunction of output conjunctions checked on it."""

    lower: np.ndarray
    upper: np.ndarray
    constraints: tuple[Constraint, ...]


@dataclass(frozen=True, eq=False)
class VnnlibProperty:
    """A counterexample specification: violated iff some disjunct has a point meeting a constraint."""

    source: str
    n_inputs: int
    n_outputs: int
    disjuncts: tuple[Disjunct, ...]


def check_matches(prop: VnnlibProperty, n_inputs: int, n_outputs: int) -> None:
    """Raise PropertyError when the property's variables do not fit a model's flat input and output."""
    if prop.n_inputs != n_inputs:
        raise PropertyError(f"{prop.source}: property declares {prop.n_inputs} inputs, model has {n_inputs}")
    if prop.n_outputs != n_outputs:
        raise PropertyError(f"{prop.source}: property declares {prop.n_outputs} outputs, model has {n_outputs}")


def read_vnnlib(path: str | Path) -> VnnlibProperty:
    """Parse a VNN-LIB file; syntax and meaning errors raise PropertyError with the file and line."""
    return parse_vnnlib(read_text(path), str(path))


def parse_vnnlib(text: str, source: str = "<string>") -> VnnlibProperty:
    """Parse VNN-LIB text; ``source`` names it in error messages."""
    return _Reader(source).read(text)


# ---------------------------------------------------------------------------------------------------
# Reading: tokens -> s-expressions -> linear atoms -> disjunctive normal form -> boxes and (A, b).


@dataclass(frozen=True)
class _Token:
    text: str
    line: int


class _List(list):
    """A parenthesised s-expression that remembers the line of its opening parenthesis."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line


_Expr = Union[_Token, _List]


@dataclass(frozen=True)
class _Bound:
    """x_index <= value (upper) or x_index >= value (lower)."""

    index: int
    upper: bool
    value: float


@dataclass(frozen=True)
class _Row:
    """coefficients @ y <= rhs."""

    coefficients: tuple[tuple[int, float], ...]
    rhs: float


_Atom = Union[_Bound, _Row]
_Dnf = list[tuple[_Atom, ...]]  # a disjunction of conjunctions; [] is false, [()] is true

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_VARIABLE = re.compile(r"([XY])_(\d+)$")
_IGNORED = {"set-logic", "set-info", "check-sat", "get-model", "exit"}
_COMPARISONS = {"<=", ">=", "<", ">", "="}


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.declared: dict[str, int] = {}  # variable name -> line of its declaration

    def error(self, line: int, message: str) -> PropertyError:
        return PropertyError(f"{self.source} line {line}: {message}")

    def read(self, text: str) -> VnnlibProperty:
        formulas = []
        for command in self.parse(text):
            formulas.extend(self.command(command))
        n_inputs, n_outputs = self.count("X"), self.count("Y")
        if n_inputs == 0:
            raise PropertyError(f"{self.source}: no input variables X_i are declared")
        cases = self.conjoin([self.dnf(f) for f in formulas])
        return VnnlibProperty(self.source, n_inputs, n_outputs, self.disjuncts(cases, n_inputs, n_outputs))

    # -- s-expressions -------------------------------------------------------------------------------

    def tokens(self, text: str) -> Iterator[_Token]:
        for number, line in enumerate(text.splitlines(), 1):
            for match in _TOKEN.finditer(line.split(";", 1)[0]):
                yield _Token(match.group(), number)

    def parse(self, text: str) -> list[_Expr]:
        stack: list[_List] = []
        top: list[_Expr] = []
        for token in self.tokens(text):
            if token.text == "(":
                stack.append(_List(token.line))
            elif token.text == ")":
                if not stack:
                    raise self.error(token.line, "unexpected ')'")
                done = stack.pop()
                (stack[-1] if stack else top).append(done)
            elif stack:
                stack[-1].append(token)
            else:
                raise self.error(token.line, f"unexpected token '{token.text}' outside parentheses")
        if stack:
            raise self.error(stack[-1].line, "'(' is never closed")
        return top

    # -- commands ------------------------------------------------------------------------------------

    def command(self, expr: _Expr) -> list[_Expr]:
        if not isinstance(expr, _List) or not expr or not isinstance(expr[0], _Token):
            raise self.error(expr.line, "expected a command such as (declare-const ...) or (assert ...)")
        head = expr[0].text
        if head == "declare-const":
            self.declare(expr)
            return []
        if head == "assert":
            if len(expr) != 2:
                raise self.error(expr.line, f"assert takes one formula, got {len(expr) - 1}")
            return [expr[1]]
        if head in _IGNORED:
            return []
        raise self.error(expr.line, f"unknown command '{head}'")

    def declare(self, expr: _List) -> None:
        if len(expr) != 3 or not all(isinstance(e, _Token) for e in expr[1:]):
            raise self.error(expr.line, "expected (declare-const NAME Real)")
        name, sort = expr[1].text, expr[2].text
        if not _VARIABLE.match(name):
            raise self.error(expr.line, f"variable '{name}' is neither an input X_i nor an output Y_j")
        if sort != "Real":
            raise self.error(expr.line, f"variable '{name}' has sort '{sort}', expected Real")
        if name in self.declared:
            raise self.error(expr.line, f"'{name}' is declared twice (first on line {self.declared[name]})")
        self.declared[name] = expr.line

    def count(self, kind: str) -> int:
        indices = sorted(int(m.group(2)) for m in map(_VARIABLE.match, self.declared) if m.group(1) == kind)
        for expected, index in enumerate(indices):
            if index != expected:
                raise PropertyError(f"{self.source}: {kind}_{expected} is not declared but {kind}_{index} is")
        return len(indices)

    # -- formulas ------------------------------------------------------------------------------------

    def dnf(self, expr: _Expr) -> _Dnf:
        if not isinstance(expr, _List) or not expr or not isinstance(expr[0], _Token):
            raise self.error(expr.line, f"expected a formula, got {self.show(expr)}")
        head, args = expr[0].text, expr[1:]
        if head == "and":
            return self.conjoin([self.dnf(a) for a in args])
        if head == "or":
            cases = [case for a in args for case in self.dnf(a)]
            self.check_size(len(cases), expr.line)
            return cases
        if head in _COMPARISONS:
            if len(args) < 2:
                raise self.error(expr.line, f"'{head}' needs at least two terms")
            terms = [self.term(a) for a in args]
            atoms = [self.compare(head, lhs, rhs, expr.line) for lhs, rhs in zip(terms, terms[1:])]
            return self.conjoin(atoms)
        raise self.error(expr.line, f"unknown operator '{head}' in formula")

    def conjoin(self, parts: list[_Dnf]) -> _Dnf:
        common: list[_Atom] = []  # atoms every case shares, kept once instead of copied per product
        cases: _Dnf = [()]
        for part in parts:
            if len(part) == 1:
                common.extend(part[0])
            else:
                self.check_size(len(cases) * len(part), None)
                cases = [c + d for c in cases for d in part]
        prefix = tuple(common)
        return [prefix + case for case in cases]

    def check_size(self, n: int, line: int | None) -> None:
        if n > MAX_CASES:
            where = f"{self.source} line {line}" if line else self.source
            raise PropertyError(f"{where}: property expands into more than {MAX_CASES} cases")

    def compare(self, op: str, lhs: "_Linear", rhs: "_Linear", line: int) -> _Dnf:
        """``lhs op rhs`` as one conjunction of atoms ``expression <= 0`` (or false, ``[]``)."""
        if op in ("<=", "<"):
            differences = [lhs - rhs]
        elif op in (">=", ">"):
            differences = [rhs - lhs]
        else:
            differences = [lhs - rhs, rhs - lhs]
        atoms = [self.atom(d, line) for d in differences]
        if any(a is False for a in atoms):
            return []
        return [tuple(a for a in atoms if a is not True)]

    def atom(self, expression: "_Linear", line: int) -> _Atom | bool:
        """``expression <= 0`` as an input bound or an output row; a constant comparison is a bool."""
        terms = {name: c for name, c in expression.coefficients.items() if c != 0}
        if not terms:
            return bool(expression.constant <= 0)
        kinds = {name[0] for name in terms}
        if kinds == {"Y"}:
            row = tuple((int(name[2:]), c) for name, c in sorted(terms.items()))
            return _Row(row, 0.0 - expression.constant)
        if kinds != {"X"}:
            raise self.error(line, "a constraint may not mix inputs X_i and outputs Y_j")
        if len(terms) > 1:
            raise self.error(line, f"constraint over several inputs ({', '.join(sorted(terms))}) is not "
                                   "supported; only bounds on single inputs")
        (name, c), = terms.items()
        return _Bound(int(name[2:]), c > 0, 0.0 - expression.constant / c)

    def term(self, expr: _Expr) -> "_Linear":
        if isinstance(expr, _Token):
            if _NUMBER.match(expr.text):
                return _Linear({}, float(expr.text))
            if expr.text in self.declared:
                return _Linear({expr.text: 1.0}, 0.0)
            raise self.error(expr.line, f"unknown identifier '{expr.text}'")
        if not expr or not isinstance(expr[0], _Token):
            raise self.error(expr.line, f"expected a term, got {self.show(expr)}")
        head, args = expr[0].text, [self.term(a) for a in expr[1:]]
        if not args:
            raise self.error(expr.line, f"'{head}' needs at least one term")
        if head == "+":
            return sum(args[1:], args[0])
        if head == "-":
            return -args[0] if len(args) == 1 else args[0] - sum(args[2:], args[1])
        if head == "*":
            return self.product(args, expr.line)
        if head == "/":
            if len(args) != 2 or args[1].coefficients or args[1].constant == 0:
                raise self.error(expr.line, "'/' must divide a term by one non-zero constant")
            return args[0].scale(1.0 / args[1].constant)
        raise self.error(expr.line, f"unknown operator '{head}' in term")

    def product(self, args: list["_Linear"], line: int) -> "_Linear":
        variable = [a for a in args if a.coefficients]
        if len(variable) > 1:
            raise self.error(line, "'*' may multiply at most one variable term by constants (non-linear)")
        factor = float(np.prod([a.constant for a in args if not a.coefficients]))
        return variable[0].scale(factor) if variable else _Linear({}, factor)

    # -- boxes and matrices --------------------------------------------------------------------------

    def disjuncts(self, cases: _Dnf, n_inputs: int, n_outputs: int) -> tuple[Disjunct, ...]:
        groups: dict[bytes, tuple[np.ndarray, np.ndarray, list[Constraint]]] = {}
        for case in cases:
            lower, upper = self.box(case, n_inputs)
            if np.any(lower > upper):
                continue  # an empty box cannot hold a counterexample
            rows = [atom for atom in case if isinstance(atom, _Row)]
            A = np.zeros((len(rows), n_outputs))
            b = np.array([row.rhs for row in rows], dtype=np.float64)
            for i, row in enumerate(rows):
                for j, c in row.coefficients:
                    A[i, j] += c
            key = lower.tobytes() + upper.tobytes()
            groups.setdefault(key, (lower, upper, []))[2].append((A, b))
        if cases and not groups:
            raise PropertyError(f"{self.source}: every input box is empty (some lower bound exceeds its upper bound)")
        return tuple(Disjunct(lower, upper, tuple(constraints)) for lower, upper, constraints in groups.values())

    def box(self, case: tuple[_Atom, ...], n_inputs: int) -> tuple[np.ndarray, np.ndarray]:
        lower = np.full(n_inputs, -np.inf)
        upper = np.full(n_inputs, np.inf)
        for atom in case:
            if isinstance(atom, _Bound):
                if atom.upper:
                    upper[atom.index] = min(upper[atom.index], atom.value)
                else:
                    lower[atom.index] = max(lower[atom.index], atom.value)
        for bounds, side in ((lower, "lower"), (upper, "upper")):
            missing = np.flatnonzero(~np.isfinite(bounds))
            if len(missing):
                name = f"X_{missing[0]}"
                raise self.error(self.declared[name], f"input {name} has no {side} bound")
        return lower, upper

    @staticmethod
    def show(expr: _Expr) -> str:
        if isinstance(expr, _Token):
            return f"'{expr.text}'"
        return "'(" + " ".join(e.text if isinstance(e, _Token) else "(...)" for e in expr) + ")'"


@dataclass(frozen=True)
class _Linear:
    """sum(coefficients[name] * name) + constant."""

    coefficients: dict[str, float]
    constant: float

    def __add__(self, other: "_Linear") -> "_Linear":
        merged = dict(self.coefficients)
        for name, c in other.coefficients.items():
            merged[name] = merged.get(name, 0.0) + c
        return _Linear(merged, self.constant + other.constant)

    def __neg__(self) -> "_Linear":
        return self.scale(-1.0)

    def __sub__(self, other: "_Linear") -> "_Linear":
        return self + (-other)

    def scale(self, factor: float) -> "_Linear":
        return _Linear({name: c * factor for name, c in self.coefficients.items()}, self.constant * factor)
