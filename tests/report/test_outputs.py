"""The report's Markdown, CSV and HTML from the fixture results: the figures, the differences, no external link."""
from __future__ import annotations

import csv
import dataclasses
import io
import re

import pytest

from certprune.report.csv_table import csv_report
from certprune.report.drilldown import png_bytes
from certprune.report.html import html_report
from certprune.report.load import load_results
from certprune.report.markdown import markdown_report
from certprune.report.plots import plots
from certprune.report.summary import summarize
from tests.conftest import REPO

DATA = REPO / "tests" / "data" / "report"
GATES = [str(DATA / f"gate_{name}.json") for name in ("mnist_pruned", "bank_pruned", "german_fail")]


@pytest.fixture(scope="module")
def models():
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)      # result files name models relative to the repository root
        return load_results(GATES + [str(DATA / "verify_vnnlib_acasxu_1_2_prop_2.json")])


@pytest.fixture(scope="module")
def figures(models):
    return plots(summarize(models))


def test_the_default_title_says_what_the_checks_are_about(models):
    bank = next(m for m in models if m.name == "bank_small")
    fairness_only = dataclasses.replace(bank, checks=tuple(c for c in bank.checks if c["kind"] == "fairness"))
    assert markdown_report([fairness_only]).startswith("# Fairness comparison: bank_small")


def test_markdown_summary_compares_each_model_with_its_baseline(models):
    text = markdown_report(models)
    assert text.startswith("# Robustness and Fairness comparison: mnist_mlp_100x2 vs mnist_mlp_100x2_pruned vs "
                           "bank_small")
    assert "Differences are against each model's gate baseline." in text
    assert "| parameters | 89,610 | 42,310 (×0.47) | 417 | 177 (×0.42) |" in text
    assert "| **Robustness on mnist, ε = 0.05 (20 samples)** |" in text
    assert re.search(r"\| certified accuracy \| 40\.0% \| 50\.0% \(\+10\.0 pp\) \|", text)
    assert "| domain certified fair | — | — | 20.0% | 100.0% (+80.0 pp) |" in text
    assert "| mnist-8-eps0.02 | vnnlib | mnist_mlp_100x2_pruned | FAIL |" in text
    assert "holds = true: false (FAIL)" in text
    assert all(line.count("|") == text.splitlines()[4].count("|") for line in text.splitlines()[4:30]
               if line.startswith("|"))


def test_csv_has_one_row_per_model_and_plain_numbers(models):
    rows = list(csv.DictReader(io.StringIO(csv_report(models))))
    assert [r["model"] for r in rows] == [m.name for m in models]
    pruned = rows[1]
    assert pruned["parameters"] == "42310" and float(pruned["mnist eps=0.02 certified_accuracy"]) == 0.85
    assert rows[2]["fairness fair-age certified_share"].startswith("0.200")
    assert rows[2]["baseline_only"] == "True" and pruned["gate_outcome"] == "fail"
    assert rows[-1]["vnnlib prop_2 verdict"] == "falsified"


def test_every_plot_has_a_title_and_an_accessible_label(figures):
    titles = [p.title for p in figures]
    assert "Certified accuracy vs ε on mnist (20 samples per ε)" in titles
    assert "Model size vs certified accuracy" in titles
    assert any(t.startswith("Unstable ReLUs per layer on mnist") for t in titles)
    assert any(t.startswith("Verification time per sample on mnist") for t in titles)
    assert "Individual fairness: the input domain by verdict" in titles
    assert all(p.svg.startswith("<svg ") and 'aria-label="' in p.svg for p in figures)


def test_the_page_is_self_contained(models, figures):
    page = html_report(models)
    assert '<link rel="icon" href="data:,">' in page and "default-src 'none'" in page
    # no URL a browser would fetch: SVG namespaces are names, not requests
    fetched = re.findall(r'(?:src|href)\s*=\s*["\'](?!data:|#)([^"\']+)', page)
    assert fetched == []
    assert not re.search(r"url\(\s*['\"]?(?!#)", page) and "@import" not in page
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert page.count("<svg") == len(figures) and page.count("data:image/png;base64,") >= 8


def test_png_of_an_input_is_a_valid_greyscale_image():
    import numpy as np
    from PIL import Image

    pixels = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)
    image = Image.open(io.BytesIO(png_bytes(pixels)))
    assert image.size == (8, 8) and image.mode == "L" and np.array_equal(np.asarray(image), pixels)
