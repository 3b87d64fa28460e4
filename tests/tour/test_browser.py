"""The report as a web page: headless Chromium opens it, every image loads, every section renders.

Chromium is Debian's ``chromium`` package, installed by ``make browser`` (a prerequisite of
``make test``). The tests skip only where it cannot be installed that way (not Linux, or not root);
on the CI machine (Linux, root) a missing Chromium is a failure.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest
from tests.tour.quick_tour import QuickTour

from lmbricks.report import Report, bar_chart, render_check
from lmbricks.report.browser import find_chromium, screenshot_colours, section_titles
from lmbricks.tour import TourContext, run_tour
from lmbricks.tour.run import SummaryRow
from lmbricks.tour.sections import inventory_section

# A real 1x1 PNG, and bytes that claim to be a PNG but cannot be decoded.
GOOD_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
BROKEN_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        can_install = sys.platform.startswith("linux") and hasattr(os, "geteuid") and os.geteuid() == 0
        if can_install:
            pytest.fail("chromium is not installed: run `make browser` (apt-get install chromium)")
        pytest.skip("no chromium on PATH, and this is not Linux as root, where `make browser` installs it")
    return path


def _assert_rendered(page: Path, shot: Path, chromium: str) -> None:
    check = render_check(page, shot, chromium=chromium)
    declared = section_titles(page.read_text())
    assert declared, "the page declares no section"
    assert check.images_total >= 1 and check.images_loaded == check.images_total, check.broken_images
    assert check.images_without_alt == 0
    assert check.sections == declared and not check.hidden_sections
    assert check.toc_links and all(check.toc_links.values()), check.toc_links
    assert "#summary" in check.toc_links
    # the screenshot shows the page: many colours (text, plots), not one background colour
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not check.screenshot_blank and check.distinct_colours > 50 and check.dominant_share < 0.99
    assert check.ok


def test_tiny_tour_renders_in_chromium(chromium: str, tiny_llama: Path, tmp_path: Path) -> None:
    page = run_tour(
        tmp_path / "tour", quick=True, model_ref=str(tiny_llama), sections=[("inventory", inventory_section)]
    )
    _assert_rendered(page, tmp_path / "shot.png", chromium)
    assert section_titles(page.read_text()) == ["Inventory", "Run"]


def test_tour_with_failed_sections_renders_in_chromium(chromium: str, tiny_llama: Path, tmp_path: Path) -> None:
    from tests.tour.test_failing_section import SECTIONS

    from lmbricks.tour import TourFailed

    def figure(ctx: TourContext) -> list[SummaryRow]:
        ctx.report.section("A figure").figure(bar_chart(ctx.out_dir / "bars.png", {"a": 1.0}, "t", "v"), "bars")
        return [("figure", "bars", "1")]

    with pytest.raises(TourFailed):
        run_tour(tmp_path / "tour", quick=True, model_ref=str(tiny_llama), sections=[("figure", figure), *SECTIONS],
                 log=lambda _: None)  # fmt: skip
    page = tmp_path / "tour" / "report.html"
    _assert_rendered(page, tmp_path / "shot.png", chromium)  # every section shows, the failed ones included
    assert "A crashing section failed" in section_titles(page.read_text())


def test_broken_image_and_blank_page_are_detected(chromium: str, tmp_path: Path) -> None:
    good, broken = tmp_path / "good.png", tmp_path / "broken.png"
    good.write_bytes(GOOD_PNG)
    broken.write_bytes(BROKEN_PNG)
    report = Report("two figures")
    report.section("Figures").figure(bar_chart(tmp_path / "bars.png", {"a": 1.0}, "t", "v"), "bars")
    report.figure(good, "one pixel").figure(broken, "not an image")
    check = render_check(report.save(tmp_path / "report.html"), tmp_path / "shot.png", chromium=chromium)
    assert (check.images_total, check.images_loaded, check.broken_images) == (3, 2, ["not an image"])
    assert check.sections == ["Figures"] and not check.ok

    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><head></head><body style='background:#fff'></body></html>")
    empty = render_check(blank, tmp_path / "blank.png", window=(400, 300), chromium=chromium)
    assert empty.screenshot_blank and screenshot_colours(tmp_path / "blank.png") == (1, 1.0)
    assert (empty.images_total, empty.sections) == (0, [])


@pytest.mark.integration
def test_quick_tour_of_default_model_renders_in_chromium(chromium: str, quick_tour: QuickTour, tmp_path: Path) -> None:
    assert quick_tour.exit_code == 0, quick_tour.output
    page = quick_tour.out / "report.html"
    timings = json.loads((quick_tour.out / "results.json").read_text())["timings_s"]
    declared = section_titles(page.read_text())
    assert len(declared) >= len(timings) + 1  # every tour section wrote at least one, plus "Run"
    _assert_rendered(page, tmp_path / "shot.png", chromium)
