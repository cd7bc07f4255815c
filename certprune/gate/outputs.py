"""What a gate leaves for CI: JUnit XML, a Markdown summary, the JSON result and counterexample files.

Every file is written whole or not at all (``write_atomic``). JUnit: one testcase per check; a failed check
is a ``<failure>``, an inconclusive one an ``<error type="inconclusive">`` (CI shows both red; the exit code
tells them apart), each carrying the figures and thresholds. Counterexamples go next to the JUnit file
(``<junit stem>-counterexamples/<check>-<k>.json``), so CI keeps them as artefacts.
"""
from __future__ import annotations

import json
import os
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

from certprune.journal import write_atomic

SYMBOL = {"pass": "pass", "fail": "FAIL", "inconclusive": "inconclusive", "error": "error"}


def write_counterexamples(result: dict, folder: Path) -> None:
    """One JSON file per counterexample; each entry's ``file`` is set to its path."""
    for check in result["checks"]:
        for k, example in enumerate(check["counterexamples"]):
            path = folder / f"{_slug(check['name'])}-{k}.json"
            example["file"] = str(path)
            payload = {"model": result["model"], "check": check["name"], **example}
            write_atomic(path, json.dumps(payload, indent=2) + "\n")


def junit_xml(result: dict) -> str:
    checks = result["checks"]
    suite = ET.Element("testsuite", name=f"certprune gate {result['model']['name']}", tests=str(len(checks)),
                       failures=str(sum(c["outcome"] == "fail" for c in checks)),
                       errors=str(sum(c["outcome"] in ("inconclusive", "error") for c in checks)),
                       skipped="0", time=f"{result['seconds']:.3f}")
    props = ET.SubElement(suite, "properties")
    for name, value in (("model", result["model"]["path"]), ("model_sha256", result["model"]["sha256"]),
                        ("policy_sha256", result["policy"]["sha256"]), ("certprune", result["certprune"])):
        ET.SubElement(props, "property", name=name, value=value)
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=f"certprune.gate.{check['kind']}", name=check["name"],
                             time=f"{check['seconds']:.3f}")
        details = "\n".join(_requirement_line(r) for r in check["requirements"])
        examples = [e.get("file") or e["label"] for e in check["counterexamples"]]
        if examples:
            details += "\ncounterexamples (replayed on onnxruntime): " + ", ".join(examples)
        if check["outcome"] == "fail":
            ET.SubElement(case, "failure", message=check["message"], type="requirement").text = details
        elif check["outcome"] != "pass":
            ET.SubElement(case, "error", message=check["message"], type=check["outcome"]).text = details
        else:
            ET.SubElement(case, "system-out").text = details
    root = ET.Element("testsuites", name="certprune gate")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def markdown(result: dict) -> str:
    lines = [f"### certprune gate: **{result['outcome'].upper()}** (exit {result['exit_code']})", "",
             f"Model `{result['model']['name']}` (sha256 `{result['model']['sha256'][:12]}`), "
             f"policy `{Path(result['policy']['path']).name}`, {result['seconds']:.1f} s, certprune "
             f"{result['certprune']}.", "",
             "| check | outcome | requirement | value | required | baseline | seconds |",
             "|---|---|---|---|---|---|---|"]
    for check in result["checks"]:
        cached = " (cached)" if check["cached"] else ""
        for i, r in enumerate(check["requirements"]):
            head = (f"{_cell(check['name'])}{cached}", SYMBOL[check["outcome"]], f"{check['seconds']:.1f}") \
                if i == 0 else ("", "", "")
            lines.append(f"| {head[0]} | {head[1]} | {_cell(r['metric'])} | {_value(r)} "
                         f"| {r['op']} {_plain(r['threshold'])} "
                         f"| {_plain(r['baseline'])} | {head[2]} |")
    examples = [(c["name"], e) for c in result["checks"] for e in c["counterexamples"]]
    if examples:
        lines += ["", f"{len(examples)} counterexample(s), replayed on onnxruntime: " +
                  ", ".join(f"{name}: {e['label']}" for name, e in examples[:10])]
    return "\n".join(lines) + "\n"


def _cell(text) -> str:
    """Text in a Markdown table cell: a '|' (a check named "size | parity") would end the cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_outputs(result: dict, *, json_path=None, junit_path=None, markdown_path=None) -> None:
    """Counterexample files first (the other outputs name them), then each requested file; the Markdown is
    also appended to ``$GITHUB_STEP_SUMMARY`` when that is set."""
    if junit_path:
        folder = Path(junit_path).parent / f"{Path(junit_path).stem}-counterexamples"
        write_counterexamples(result, folder)
    if json_path:
        write_atomic(json_path, json.dumps(result, indent=2) + "\n")
    if junit_path:
        write_atomic(junit_path, junit_xml(result))
    text = markdown(result)
    if markdown_path:
        write_atomic(markdown_path, text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a") as f:
                f.write(text + "\n")
        except OSError as error:  # the CI's summary file is an extra: the gate's verdict and exit code stand
            warnings.warn(f"cannot append to $GITHUB_STEP_SUMMARY ({summary}): {error.strerror or error}",
                          stacklevel=2)


def _requirement_line(r: dict) -> str:
    base = f", baseline {_plain(r['baseline'])}" if r["baseline"] is not None else ""
    return f"[{r['outcome']}] {r['message']}{base}"


def _value(r: dict) -> str:
    if r["range"] and r["range"][0] != r["range"][1]:
        return f"[{r['range'][0]:.4g}, {r['range'][1]:.4g}]"
    return _plain(r["value"])


def _plain(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "check"
