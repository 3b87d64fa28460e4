"""Reports: matplotlib plots saved as PNG and one self-contained HTML page per run."""

from lmbricks.report.html import Report
from lmbricks.report.plots import bar_chart, heatmap, line_chart

__all__ = ["Report", "bar_chart", "heatmap", "line_chart"]
