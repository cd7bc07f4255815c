"""The per-check drill-down in HTML: each model's outcome and requirements, then every counterexample with its
input (an image when the input is a square picture, both twins for fairness) and the model's outputs."""
from __future__ import annotations

import base64
import json
import math
import struct
import zlib
from html import escape

import numpy as np

from certprune.report import fmt
from certprune.report.load import ModelResult
from certprune.report.table import TONES

OPS = {">=": "≥", "<=": "≤", "==": "=", ">": ">", "<": "<"}
VALUES_SHOWN = 32
EXAMPLES_SHOWN = 8


def checks_section(checks: dict[str, list[tuple[ModelResult, dict]]], colours: dict[str, str]) -> str:
    if not checks:
        return ""
    body = "".join(_check(name, runs, colours) for name, runs in checks.items())
    return f'<section id="checks"><h2>Checks, model by model</h2>{body}</section>'


def _check(name: str, runs: list[tuple[ModelResult, dict]], colours: dict[str, str]) -> str:
    kind = runs[0][1]["kind"]
    rows = "".join(_run_row(model, check, colours) for model, check in runs)
    table = (f"<table class=\"runs\"><thead><tr><th>model</th><th>outcome</th><th>time</th>"
             f"<th>requirements</th></tr></thead><tbody>{rows}</tbody></table>")
    settings = _settings(runs)
    examples = "".join(_counterexamples(model, check, colours) for model, check in runs)
    return (f'<article class="check" id="check-{escape(_slug(name))}"><h3>{escape(name)} '
            f'<span class="kind">{escape(kind)}</span></h3>{table}{settings}{examples}</article>')


def _run_row(model: ModelResult, check: dict, colours: dict[str, str]) -> str:
    outcome = check.get("outcome")
    time = "cached" if check.get("cached") else fmt.seconds(check.get("seconds"))
    requirements = "".join(_requirement(r) for r in check.get("requirements", []))
    message = f'<p class="message">{escape(check["message"])}</p>' \
        if check.get("message") and (outcome != "pass" or not requirements) else ""
    if not requirements and not message:
        requirements = '<li class="muted">figures only (no requirement judged)</li>'
    return (f'<tr><td class="model">{model_label(model, colours)}</td><td>{badge(outcome)}</td><td>{time}</td>'
            f'<td><ul class="reqs">{requirements}</ul>{message}</td></tr>')


def _requirement(r: dict) -> str:
    """outcome, metric op threshold: value (the interval when work stayed undecided; the baseline's figure)."""
    extra = []
    low, high = r.get("range") or (None, None)
    if low is not None and low != high:
        extra.append(f"between {fmt.number(low)} and {fmt.number(high)} while undecided work remains")
    if r.get("baseline") is not None:
        extra.append(f"baseline {fmt.number(r['baseline'])}")
    note = f' <span class="muted">({escape("; ".join(extra))})</span>' if extra else ""
    return (f"<li>{badge(r.get('outcome'))} <code>{escape(str(r['metric']))} {OPS.get(r['op'], escape(r['op']))} "
            f"{fmt.number(r['threshold'])}</code>: <b>{fmt.number(r.get('value'))}</b>{note}</li>")


def _settings(runs: list[tuple[ModelResult, dict]]) -> str:
    settings = runs[0][1].get("settings") or {}
    if not settings:
        return ""
    text = json.dumps(settings, indent=1, sort_keys=True, default=str)
    return f"<details class=\"settings\"><summary>settings</summary><pre>{escape(text)}</pre></details>"


def _counterexamples(model: ModelResult, check: dict, colours: dict[str, str]) -> str:
    examples = check.get("counterexamples") or []
    if not examples:
        return ""
    decides = check["kind"] != "vnnlib"    # a VNN-LIB property says what its outputs mean, not a decision rule
    items = '<div class="examples">' + "".join(counterexample(c, model.name, decides)
                                               for c in examples[:EXAMPLES_SHOWN])
    items += "</div>"
    if len(examples) > EXAMPLES_SHOWN:
        items += (f'<p class="muted">… and {len(examples) - EXAMPLES_SHOWN} more in the result file '
                  f'({escape(", ".join(model.sources))}).</p>')
    plural = "s" if len(examples) > 1 else ""
    what = "pair" if check["kind"] == "fairness" else "counterexample"
    note = ('<p class="muted">Each pair differs only in protected features, yet the model decides differently; '
            "the features that differ are shown, the rest are folded.</p>") if check["kind"] == "fairness" else ""
    return (f'<details class="cex" open><summary>{model_label(model, colours)}: {len(examples)} {what}{plural}, '
            f"replayed on the model with onnxruntime</summary>{note}{items}</details>")


def counterexample(c: dict, model_name: str, decides: bool = True) -> str:
    file = f' <span class="muted">file {escape(str(c["file"]))}</span>' if c.get("file") else ""
    head = f'<h4>{escape(str(c.get("label", "counterexample")))}{file}</h4>'
    if "x_prime" in c:
        return f'<div class="example">{head}{_twins(c, model_name)}</div>'
    return (f'<div class="example">{head}<div class="pair">{input_view(c["x"])}'
            f'{outputs_table(c["outputs"], model_name, decides)}</div></div>')


def _twins(c: dict, model_name: str) -> str:
    """The features the twins differ in, both outputs and decisions; every feature folded away below."""
    names = c.get("names") or [f"x[{i}]" for i in range(len(c["x"]))]
    rows = [(n, a, b) for n, a, b in zip(names, c["x"], c["x_prime"])]
    decisions = c.get("decisions") or [None, None]
    outputs = (f'<tr class="out"><th>output of {escape(model_name)}</th><td>{_vector(c["outputs"])}</td>'
               f'<td>{_vector(c["outputs_prime"])}</td></tr>'
               f'<tr class="out diff"><th>decision</th><td>{decisions[0]}</td><td>{decisions[1]}</td></tr>')
    head = "<thead><tr><th>feature</th><th>x</th><th>x′ (twin)</th></tr></thead>"
    return (f'<table class="twins">{head}<tbody>{_feature_rows(r for r in rows if r[1] != r[2])}{outputs}'
            f'</tbody></table><details><summary>all {len(rows)} features</summary><table class="twins">{head}'
            f"<tbody>{_feature_rows(rows)}</tbody></table></details>")


def _feature_rows(rows) -> str:
    return "".join(f'<tr class="{"diff" if a != b else ""}"><th>{escape(str(n))}</th><td>{_value(a)}</td>'
                   f"<td>{_value(b)}</td></tr>" for n, a, b in rows)


def input_view(x: list[float]) -> str:
    """A square input of at least 8x8 values is drawn as a greyscale image; anything else as numbers."""
    side = math.isqrt(len(x))
    if side >= 8 and side * side == len(x):
        return f'<figure class="input">{image_png(x, side)}<figcaption>input, {side}×{side}</figcaption></figure>'
    shown = "".join(f"<tr><th>x[{i}]</th><td>{_value(v)}</td></tr>" for i, v in enumerate(x[:VALUES_SHOWN]))
    more = ""
    if len(x) > VALUES_SHOWN:
        more = (f"<details><summary>all {len(x)} values</summary><pre>"
                f"{escape(json.dumps([float(v) for v in x]))}</pre></details>")
    return f'<div class="input"><table class="values"><tbody>{shown}</tbody></table>{more}</div>'


def image_png(x: list[float], side: int, scale: int = 4) -> str:
    """Greyscale pixels (0 black, 1 white; rescaled when outside [0, 1]) as an <img> with a PNG data URI."""
    values = np.asarray(x, dtype=float).reshape(side, side)
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    pixels = np.round(255 * (values - lo) / ((hi - lo) or 1.0)).astype(np.uint8)
    data = base64.b64encode(png_bytes(pixels)).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" width="{side * scale}" height="{side * scale}" '
            f'alt="counterexample input, {side} by {side} pixels">')


def png_bytes(pixels: np.ndarray) -> bytes:
    """A minimal 8-bit greyscale PNG (signature, IHDR, one IDAT, IEND)."""
    height, width = pixels.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)   # filter type 0 per scanline

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def outputs_table(outputs: list[float], model_name: str, decides: bool = True) -> str:
    """The outputs with the model's decision marked: the first largest logit, or class 1 iff a single logit is
    > 0 (``decides`` False: the outputs only)."""
    decided = None
    if decides and outputs:
        decided = (1 if outputs[0] > 0 else 0) if len(outputs) == 1 else outputs.index(max(outputs))
    rows = "".join(f'<tr class="{"decided" if j == decided and len(outputs) > 1 else ""}"><th>y[{j}]</th>'
                   f"<td>{_value(v)}</td></tr>" for j, v in enumerate(outputs))
    note = "" if decided is None else f'<br><span class="muted">decision: class {decided}</span>'
    return (f'<table class="values outputs"><caption>outputs of {escape(model_name)}{note}</caption>'
            f"<tbody>{rows}</tbody></table>")


def badge(outcome: str | None) -> str:
    if outcome is None:
        return '<span class="badge">—</span>'
    return f'<span class="badge {TONES.get(outcome, "")}">{escape(fmt.OUTCOME_WORDS.get(outcome, outcome))}</span>'


def model_label(model: ModelResult, colours: dict[str, str]) -> str:
    colour = colours.get(model.name, "#000000")
    tag = ' <span class="muted">(baseline)</span>' if model.baseline_only else ""
    return f'<span class="swatch" style="background:{colour}"></span>{escape(model.name)}{tag}'


def _value(v) -> str:
    return escape(f"{v:.6g}" if isinstance(v, float) else str(v))


def _vector(values: list[float]) -> str:
    return _value(values[0]) if len(values) == 1 else "[" + ", ".join(_value(v) for v in values) + "]"


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower())
