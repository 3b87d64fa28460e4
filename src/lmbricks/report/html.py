"""A self-contained HTML report: sections of text, tables and inlined PNG figures."""

from __future__ import annotations

import base64
import html
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:980px;margin:2em auto;
padding:0 1em;color:#1d2330;line-height:1.5}
h1{border-bottom:3px solid #4c72b0;padding-bottom:.2em}h2{margin-top:1.8em;color:#2b4a80}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccd;padding:.3em .7em;text-align:right}th{background:#eef2f8}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #dde}
figcaption{font-size:.9em;color:#555}.meta{color:#667;font-size:.85em}
pre{background:#f5f6f8;padding:.8em;overflow-x:auto}section{margin-bottom:2em}
nav.toc{font-size:.92em;margin:1em 0}nav.toc ol{display:flex;flex-wrap:wrap;gap:.2em 1.4em;margin:.3em 0;
padding-left:0;list-style-position:inside}
.status{font-size:.6em;vertical-align:middle;padding:.1em .5em;border-radius:.3em;color:#fff}
.status.failed{background:#b03a2e}.status.skipped{background:#7f8c8d}
div.failed{border-left:4px solid #b03a2e;background:#fbeeec;padding:.4em 1em;margin:1em 0}
div.skipped{border-left:4px solid #7f8c8d;background:#f2f3f4;padding:.4em 1em;margin:1em 0}
div.failed p.error{white-space:pre-wrap;font-weight:600}
tr.failed td{background:#fbeeec;color:#8e2a20;font-weight:600}tr.skipped td{color:#667}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _badge(status: str) -> str:
    return f' <span class="status {html.escape(status)}">{html.escape(status)}</span>' if status else ""


@dataclass
class _Section:
    title: str
    parts: list[str] = field(default_factory=list)
    anchor: str = ""
    status: str = ""  # "", "failed" or "skipped": shown beside the title and in the contents


class Report:
    """Builds one HTML page; images are embedded as base64 so the file stands alone.

    Example:
        >>> r = Report("lmbricks tour")
        >>> s = r.section("Inventory", "What the default model is made of.")
        >>> r.table(rows=[["embedding", 28_311_552]], columns=["role", "parameters"])
        >>> r.save(Path("runs/tour/report.html"))
    """

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.sections: list[_Section] = []
        self._summary: list[str] = []

    def _current(self) -> _Section:
        if not self.sections:
            self.section(self.title)
        return self.sections[-1]

    def section(self, title: str, text: str = "") -> Report:
        """Start a new section; later ``text``/``table``/``figure`` calls add to it."""
        anchor = f"s{len(self.sections) + 1}"
        self.sections.append(_Section(title=title, anchor=anchor))
        if text:
            self.text(text)
        return self

    def text(self, text: str) -> Report:
        """A paragraph (plain text, escaped)."""
        self._current().parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def code(self, text: str) -> Report:
        """A preformatted block (commands, sample output)."""
        self._current().parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def raw_html(self, fragment: str) -> Report:
        """Trusted HTML produced by lmbricks itself (e.g. coloured tokens)."""
        self._current().parts.append(fragment)
        return self

    def table(self, rows: Sequence[Sequence[Any]], columns: Sequence[str], caption: str = "") -> Report:
        """A table; floats are shown with 4 significant digits."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self._current().parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def figure(self, png: Path, caption: str = "") -> Report:
        """Embed a PNG file (base64) with a caption."""
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        alt = html.escape(caption or Path(png).stem)
        self._current().parts.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">{cap}</figure>')
        return self

    def failure(self, error: str, reproduce: str, traceback: str | None = None) -> Report:
        """Mark the current section failed: the error, the command that reproduces it, and a traceback.

        Args:
            error: ``"ExceptionType: message"``.
            reproduce: the shell command that runs the failing part again.
            traceback: for unexpected exceptions, a short traceback (shown collapsed).
        """
        current = self._current()
        current.status = "failed"
        tb = f"<details><summary>Traceback</summary><pre>{html.escape(traceback)}</pre></details>" if traceback else ""
        current.parts.append(
            f'<div class="failed"><p class="error">failed: {html.escape(error)}</p>'
            f"<p>Reproduce with:</p><pre>{html.escape(reproduce)}</pre>{tb}</div>"
        )
        return self

    def skipped(self, reason: str) -> Report:
        """Mark the current section skipped, with the reason shown."""
        current = self._current()
        current.status = "skipped"
        current.parts.append(f'<div class="skipped"><p>skipped: {html.escape(reason)}</p></div>')
        return self

    def summary(
        self,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        row_classes: Sequence[str] | None = None,
        note: str = "",
    ) -> Report:
        """The table shown at the top of the page, before the first section.

        Args:
            rows: the table's rows.
            columns: its column names.
            row_classes: a CSS class per row (``"failed"``, ``"skipped"`` or ``""``) that marks it.
            note: a paragraph shown above the table.
        """
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        classes = list(row_classes) if row_classes is not None else [""] * len(rows)
        body = "".join(
            (f'<tr class="{html.escape(cls)}">' if cls else "<tr>")
            + "".join(f"<td>{_cell(v)}</td>" for v in row)
            + "</tr>"
            for row, cls in zip(rows, classes, strict=True)
        )
        para = f"<p>{html.escape(note)}</p>" if note else ""
        self._summary = [
            f'<h2 id="summary">Summary</h2>{para}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        ]
        return self

    def render(self) -> str:
        """The whole page as a string."""
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        links = ([("summary", "Summary")] if self._summary else []) + [
            (s.anchor, f"{s.title} ({s.status})" if s.status else s.title) for s in self.sections
        ]
        toc = "".join(f'<li><a href="#{anchor}">{html.escape(title)}</a></li>' for anchor, title in links)
        body = "".join(
            f'<section id="{s.anchor}"><h2>{html.escape(s.title)}{_badge(s.status)}</h2>{"".join(s.parts)}</section>'
            for s in self.sections
        )
        sub = f"<p>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>{sub}"
            f'<p class="meta">Generated {stamp} by lmbricks.</p>'
            f'<nav class="toc" aria-label="Contents"><strong>Contents</strong><ol>{toc}</ol></nav>'
            f"{''.join(self._summary)}{body}</body></html>"
        )

    def save(self, path: Path) -> Path:
        """Write the page atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.render())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(tmp, path)
        return path
