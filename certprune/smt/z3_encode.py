"""One generic Network -> Z3 encoding in exact rational arithmetic, and time-limited checks.

Every float weight enters as the rational number it is exactly (``Fraction(float(w))``), so Z3 reasons
about the network's real-valued function, without rounding. Integer inputs (``z3.Int``) are lifted with
``ToReal``. Dense, Affine and Flatten layers are linear expressions; a ReLU neuron is
  * dropped (the constant 0) when its state is -1 (stably inactive on the inputs of interest),
  * its input when its state is +1 (stably active: linear),
  * a fresh variable ``h == If(pre >= 0, pre, 0)`` when unstable (state 0, the default without states),
    with the optional bounds ``l <= pre <= u`` added as implied constraints that help the solver.
With bounds, a stable neuron keeps its row (``pre <= u`` or ``pre >= l``), as in the MILP encoding.
States and bounds must be sound for the inputs the caller constrains (e.g. from certprune.bounds).
Conv2d is not encoded (UnsupportedLayerError): dense verification problems are what SMT is for here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import numpy as np
import z3

from certprune.errors import UnsupportedLayerError
from certprune.network import MOVES, Affine, Dense, Network, ReLU, gather_index, pool_windows


@dataclass(frozen=True, eq=False)
class Z3Encoding:
    """``outputs``: one Real expression per flat network output; ``constraints``: the ReLU definitions and
    hints to assert with them; ``unstable``: how many neurons became If-terms."""

    outputs: tuple
    constraints: tuple
    unstable: int


@dataclass(frozen=True)
class Z3Result:
    """``status`` is 'sat', 'unsat', 'timeout' or 'unknown'; ``model`` is set for 'sat'."""

    status: str
    model: object = None
    seconds: float = 0.0
    reason: str = field(default="")


def rational(value: float) -> z3.RatNumRef:
    """The exact value of a float as a Z3 rational constant."""
    f = Fraction(float(value))
    return z3.RealVal(f)


def encode(network: Network, inputs: Sequence, *, states: Sequence | None = None,
           pre_bounds: Sequence | None = None, prefix: str = "h") -> Z3Encoding:
    """Z3 expressions of ``network`` applied to ``inputs`` (flat, Int or Real expressions).

    ``states``: per ReLU layer, +1/-1/0 per neuron (None: all unstable). ``pre_bounds``: per ReLU layer,
    (lower, upper) arrays of its input, used as hints for unstable neurons.
    """
    size = int(np.prod(network.input_shape))
    if len(inputs) != size:
        raise ValueError(f"{len(inputs)} input expressions for a network with {size} inputs")
    values = [[z3.ToReal(x) if z3.is_int(x) else x for x in inputs]]  # per value of the graph, flat
    shapes = network.shapes()
    constraints: list = []
    unstable = 0
    relu = 0
    for index, (layer, sources) in enumerate(zip(network.layers, network.inputs)):
        ins = [values[j + 1] for j in sources]
        if isinstance(layer, Dense):
            values.append(_dense(layer, ins[0]))
        elif isinstance(layer, Affine):
            scale, shift = (t.detach().double().reshape(-1).numpy() for t in (layer.scale, layer.shift))
            values.append([_affine_term(v, s, c) for v, s, c in zip(ins[0], scale, shift)])
        elif layer.kind in MOVES:
            every = [v for value in ins for v in value]
            values.append([every[i] if i >= 0 else z3.RealVal(0)
                           for i in gather_index(layer, *(shapes[j + 1] for j in sources))])
        elif layer.kind == "add":
            values.append([a + b for a, b in zip(*ins)])
        elif layer.kind == "maxpool":
            values.append([_maximum([ins[0][i] for i in window if i >= 0])
                           for window in pool_windows(layer, shapes[sources[0] + 1])])
        elif isinstance(layer, ReLU):
            (pre,) = ins
            state = np.zeros(len(pre), dtype=np.int8) if states is None else np.asarray(states[relu]).ravel()
            bounds = None if pre_bounds is None else tuple(_flat(b) for b in pre_bounds[relu])
            if len(state) != len(pre):
                raise ValueError(f"states of ReLU layer {relu} have {len(state)} entries, the layer {len(pre)}")
            out, added, count = _relu(pre, state, bounds, f"{prefix}{relu}_")
            values.append(out)
            constraints.extend(added)
            unstable += count
            relu += 1
        else:
            raise UnsupportedLayerError(f"the Z3 encoding has no rule for layer kind '{layer.kind}' "
                                        f"({type(layer).__name__} at layer {index})")
    return Z3Encoding(tuple(values[-1]), tuple(constraints), unstable)


def _maximum(terms: list):
    out = terms[0]
    for term in terms[1:]:
        out = z3.If(term > out, term, out)
    return out


def _dense(layer: Dense, values: list) -> list:
    W = layer.weight.detach().double().numpy()
    b = layer.bias.detach().double().numpy()
    out = []
    for row, bias in zip(W, b):
        terms = [rational(w) * v for w, v in zip(row, values) if w != 0 and not _is_zero(v)]
        constant = rational(bias)
        out.append(z3.Sum(*terms, constant) if terms else constant)
    return out


def _affine_term(value, scale: float, shift: float):
    if scale == 0 or _is_zero(value):
        return rational(shift)
    return rational(scale) * value + rational(shift)


def _relu(values: list, state: np.ndarray, bounds, prefix: str) -> tuple[list, list, int]:
    out, constraints, count = [], [], 0
    for j, (pre, s) in enumerate(zip(values, state)):
        if s != 0 and bounds is not None:
            # a stable neuron's bound is a row too: without it the encoding would range over inputs where
            # the neuron is not stable (e.g. a branch-and-bound split) and give it the wrong output
            edge = float(bounds[1][j]) if s < 0 else float(bounds[0][j])
            constraints.append(pre <= rational(edge) if s < 0 else pre >= rational(edge))
        if s < 0:
            out.append(z3.RealVal(0))
        elif s > 0:
            out.append(pre)
        else:
            h = z3.Real(f"{prefix}{j}")
            constraints.append(h == z3.If(pre >= 0, pre, z3.RealVal(0)))
            if bounds is not None:
                lo, hi = float(bounds[0][j]), float(bounds[1][j])
                constraints.extend([pre >= rational(lo), pre <= rational(hi), h <= rational(max(hi, 0.0))])
            out.append(h)
            count += 1
    return out, constraints, count


def solve(constraints: Sequence, timeout: float | None = None) -> Z3Result:
    """Check the conjunction of ``constraints`` within ``timeout`` seconds (None: no limit)."""
    started = time.perf_counter()
    solver = z3.Solver()
    if timeout is not None:
        solver.set("timeout", max(1, int(timeout * 1000)))
    solver.add(*constraints)
    answer = solver.check()
    seconds = time.perf_counter() - started
    if answer == z3.sat:
        return Z3Result("sat", solver.model(), seconds)
    if answer == z3.unsat:
        return Z3Result("unsat", None, seconds)
    reason = solver.reason_unknown()
    status = "timeout" if "timeout" in reason or "canceled" in reason else "unknown"
    return Z3Result(status, None, seconds, reason)


def value_of(model, expression) -> Fraction:
    """The exact rational value of an Int or Real expression in a model (unconstrained ones are 0)."""
    v = model.eval(expression, model_completion=True)
    if z3.is_int_value(v):
        return Fraction(v.as_long())
    if z3.is_rational_value(v):
        return Fraction(v.numerator_as_long(), v.denominator_as_long())
    if z3.is_algebraic_value(v):
        return Fraction(v.approx(20).as_fraction())
    raise ValueError(f"cannot read the value of {expression} from the model: {v}")


def _flat(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64).ravel()


def _is_zero(value) -> bool:
    return z3.is_rational_value(value) and value.numerator_as_long() == 0
