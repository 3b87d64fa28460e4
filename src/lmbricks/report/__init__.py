"""Reports: matplotlib plots saved as PNG, one self-contained HTML page per run, and a headless-browser check."""

from lmbricks.report.browser import BrowserCheck, render_check
from lmbricks.report.html import Report
from lmbricks.report.plots import bar_chart, heatmap, line_chart

__all__ = ["BrowserCheck", "Report", "bar_chart", "heatmap", "line_chart", "render_check"]
