"""The report as a person sees it: headless Chromium (the Debian package) opens the file and finds no console
error, no request leaving the file, every plot and image drawn with a size; a screenshot is kept.

Set CERTPRUNE_UPDATE_DOCS=1 to refresh docs/report.png (the README's screenshot) from this run.
"""
from __future__ import annotations

import os
import shutil

import pytest

from certprune.report.html import html_report
from certprune.report.load import load_results
from tests.conftest import REPO

DATA = REPO / "tests" / "data" / "report"
EVERYTHING = ["gate_mnist_pruned.json", "gate_bank_pruned.json", "gate_german_fail.json",
              "verify_fairness_german_small.json", "verify_vnnlib_acasxu_1_2_prop_2.json"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium); the report's browser test "
                    "needs it")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def report_file(folder, names: list[str]):
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        models = load_results([str(DATA / name) for name in names])
    path = folder / "report.html"
    path.write_text(html_report(models), encoding="utf-8")
    return path


def open_page(browser, path, width: int = 1280):
    """The page loaded, with every console message, page error and request it made."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    seen = {"console": [], "errors": [], "requests": []}
    page.on("console", lambda message: seen["console"].append((message.type, message.text)))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.goto(path.as_uri(), wait_until="load")
    return page, seen


def test_the_report_loads_offline_and_draws_everything(browser, tmp_path):
    path = report_file(tmp_path, EVERYTHING)
    page, seen = open_page(browser, path)
    assert [m for m in seen["console"] if m[0] in ("error", "warning")] == [] and seen["errors"] == []
    assert [url for url in seen["requests"] if url != path.as_uri() and not url.startswith("data:")] == []
    sizes = page.eval_on_selector_all(
        "svg, img", "nodes => nodes.map(n => { const r = n.getBoundingClientRect();"
        " return [n.tagName, r.width, r.height, n.tagName !== 'IMG' || (n.complete && n.naturalWidth > 0)]; })")
    assert sum(tag.lower() == "svg" for tag, *_ in sizes) >= 8 and sum(tag == "IMG" for tag, *_ in sizes) >= 8
    assert all(width > 0 and height > 0 and decoded for _, width, height, decoded in sizes), sizes
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280      # nothing wider than the window
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    page.close()


def test_screenshot_of_a_pruned_model_against_its_original(browser, tmp_path):
    """The README's picture: the summary and plots of the MNIST gate (dense baseline vs pruned)."""
    path = report_file(tmp_path, ["gate_mnist_pruned.json"])
    page, seen = open_page(browser, path, width=1180)
    assert seen["errors"] == []
    bottom = page.eval_on_selector("#plots", "node => node.getBoundingClientRect().bottom + window.scrollY")
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True, clip={"x": 0, "y": 0, "width": 1180, "height": bottom + 16})
    page.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("CERTPRUNE_UPDATE_DOCS"):
        from PIL import Image

        image = Image.open(shot).convert("RGB")
        image = image.resize((image.width * 3 // 5, image.height * 3 // 5), Image.LANCZOS)
        image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(REPO / "docs" / "report.png", optimize=True)
