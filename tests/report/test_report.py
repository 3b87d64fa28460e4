"""Reports are self-contained HTML with inlined images; plots are real PNG files."""

from __future__ import annotations

import base64
from pathlib import Path

from lmbricks.report import Report, bar_chart, heatmap, line_chart

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_write_png(tmp_path: Path) -> None:
    paths = [
        bar_chart(tmp_path / "a.png", {"x": 1.0, "y": 2.0}, "t", "v"),
        bar_chart(tmp_path / "b.png", {"s1": {"x": 1.0}, "s2": {"x": 2.0, "y": 3.0}}, "t", "v"),
        line_chart(tmp_path / "c.png", {"l": ([0, 1, 2], [3.0, 2.0, 1.0])}, "t", "x", "y"),
        heatmap(tmp_path / "d.png", [[0.1, 0.2], [0.3, 0.4]], ["r1", "r2"], ["c1", "c2"], "t"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_report_inlines_images_and_escapes_text(tmp_path: Path) -> None:
    png = bar_chart(tmp_path / "a.png", {"x": 1.0}, "t", "v")
    report = Report("Title <1>")
    report.section("First", "text with <script> & friends")
    report.table([["row", 1.23456, 12345]], ["name", "float", "int"])
    report.figure(png, "caption")
    report.summary([["First", "metric", "1.0"]], ["section", "measure", "value"])
    out = report.save(tmp_path / "sub" / "report.html")
    page = out.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode() in page
    assert 'src="http' not in page and "1.235" in page and "12,345" in page
    assert page.index("Summary") < page.index('id="s1"')
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temp file left behind
