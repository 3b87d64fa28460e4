"""What ``lmbricks tour --quick --out DIR`` left behind (the shared fixture's value), and how to read it."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class QuickTour:
    """The output directory, exit code and console output of one quick tour."""

    out: Path
    exit_code: int
    output: str

    def results(self) -> dict[str, Any]:
        """Its ``results.json``, after checking that the tour succeeded."""
        assert self.exit_code == 0, self.output
        data: dict[str, Any] = json.loads((self.out / "results.json").read_text())
        return data

    def section_page(self, title: str) -> str:
        """The HTML of the report's section titled ``title`` (``<section>`` to ``</section>``).

        A check on the whole page (a plot, say) would pass on any other section's; this is one section's.
        """
        page = (self.out / "report.html").read_text()
        start = re.search(rf'<section id="[^"]*"><h2>{re.escape(html.escape(title))}', page)
        assert start is not None, f"no section titled {title!r} in {self.out / 'report.html'}"
        end = page.index("</section>", start.start())
        return page[start.start() : end]

    def copy_cache(self, to: Path, *names: str) -> Path:
        """Copy the tour's cached artefacts ``names`` (files or folders under ``cache/``) into the tour folder ``to``.

        A test runs a section again there, on the cache, without writing into the shared tour. The files
        are hard links (a merged model is hundreds of MB): a section that reuses its cache only reads it,
        and one that rewrote a cached file in place would break the other tests of the shared tour.

        Returns:
            ``to``.
        """
        (to / "cache").mkdir(parents=True, exist_ok=True)
        for name in names:
            source = self.out / "cache" / name
            if source.is_dir():
                shutil.copytree(source, to / "cache" / name, copy_function=os.link)
            else:
                os.link(source, to / "cache" / name)
        return to


def run_quick_tour(out: Path) -> QuickTour:
    """Run the command a user runs, in process."""
    from typer.testing import CliRunner

    from lmbricks.cli.main import app

    result = CliRunner().invoke(app, ["tour", "--quick", "--out", str(out)])
    return QuickTour(out, result.exit_code, result.output)
