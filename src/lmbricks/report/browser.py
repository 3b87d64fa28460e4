"""Open a report in headless Chromium: a screenshot, and from the live DOM whether images and sections rendered.

One Chromium run does both: it loads a copy of the page with a small script added at the end of the
body. After the ``load`` event the script writes what it sees into the DOM as a JSON ``<script>``
element (every ``<img>``: complete with ``naturalWidth > 0``; every ``<section>``: its ``<h2>`` and
whether it has a rendered box; every table-of-contents link: whether its target exists), Chromium
dumps the DOM (``--dump-dom``) and writes the screenshot (``--screenshot``). The copy carries a
``<base href>`` to the original folder, so relative links resolve as they would in the original.

Chromium runs with ``--headless --no-sandbox --disable-gpu``, a throw-away profile and background
networking, first-run, sync, extensions and crash reporting turned off. Debian's package is
``chromium`` (``make browser`` installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from lmbricks.errors import LmbricksError

#: Executable names tried in order (after ``$LMBRICKS_CHROMIUM``).
CHROMIUM_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

_CHECK_ID = "lmbricks-browser-check"

# Runs after every image and style has loaded; its JSON lands in the dumped DOM.
_CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var visible = function (el) { var r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  var result = {
    title: document.title,
    images_total: imgs.length,
    images_loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    broken_images: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                       .map(function (i) { return i.alt || "(no alt)"; }),
    images_without_alt: imgs.filter(function (i) { return !i.alt; }).length,
    sections: Array.prototype.slice.call(document.querySelectorAll("section")).map(function (s) {
      var h = s.querySelector("h2");
      return {id: s.id, title: h ? h.textContent : "", rendered: visible(s) && !!h && visible(h)};
    }),
    toc_links: Array.prototype.slice.call(document.querySelectorAll("nav a[href^='#']")).map(function (a) {
      return {href: a.getAttribute("href"), target: !!document.getElementById(a.getAttribute("href").slice(1))};
    }),
    page_height: document.documentElement.scrollHeight
  };
  var out = document.createElement("script");
  out.type = "application/json";
  out.id = "__CHECK_ID__";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>""".replace("__CHECK_ID__", _CHECK_ID)


class BrowserError(LmbricksError):
    """Chromium is missing, failed, or the page did not finish loading."""


@dataclass
class BrowserCheck:
    """What headless Chromium saw when it opened a report.

    Attributes:
        html: the page that was opened.
        screenshot: the PNG Chromium wrote.
        title: the document title.
        images_total: ``<img>`` elements in the DOM.
        images_loaded: those complete with ``naturalWidth > 0``.
        broken_images: alt text of the images that did not load.
        images_without_alt: images with an empty or missing ``alt``.
        sections: titles (``<h2>`` text) of the sections with a rendered, non-empty box, in page order.
        hidden_sections: titles of sections present in the DOM but not rendered.
        toc_links: table-of-contents targets (``#id``) and whether each exists.
        page_height: document height in CSS pixels.
        distinct_colours: distinct RGB colours in the screenshot.
        dominant_share: share of the screenshot's pixels that have its most common colour.
    """

    html: Path
    screenshot: Path
    title: str
    images_total: int
    images_loaded: int
    broken_images: list[str] = field(default_factory=list)
    images_without_alt: int = 0
    sections: list[str] = field(default_factory=list)
    hidden_sections: list[str] = field(default_factory=list)
    toc_links: dict[str, bool] = field(default_factory=dict)
    page_height: int = 0
    distinct_colours: int = 0
    dominant_share: float = 1.0

    @property
    def screenshot_blank(self) -> bool:
        """True when the screenshot is a single colour (nothing was painted)."""
        return self.distinct_colours <= 1

    @property
    def ok(self) -> bool:
        """Every image loaded, every section rendered, every TOC link resolves, the screenshot is not blank."""
        return (
            self.images_loaded == self.images_total
            and not self.hidden_sections
            and all(self.toc_links.values())
            and not self.screenshot_blank
        )


def find_chromium() -> str | None:
    """Path of a Chromium executable: ``$LMBRICKS_CHROMIUM``, else the first of :data:`CHROMIUM_NAMES` on PATH."""
    override = os.environ.get("LMBRICKS_CHROMIUM")
    if override:
        return shutil.which(override) or (override if Path(override).is_file() else None)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_command(
    chromium: str, url: str, out_png: Path, profile: Path, window: tuple[int, int], budget_ms: int
) -> list[str]:
    """The command line: headless, no sandbox/GPU/network chatter, a throw-away profile, DOM dump and screenshot."""
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--disable-breakpad",
        "--disable-crash-reporter",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--mute-audio",
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
        f"--virtual-time-budget={budget_ms}",
        f"--screenshot={out_png}",
        "--dump-dom",
        url,
    ]


def with_check_script(page: str, base: Path) -> str:
    """``page`` with a ``<base href>`` to ``base`` (a folder) and the check script before ``</body>``."""
    href = base.resolve().as_uri() + "/"
    head = f'<base href="{href}">'
    page = re.sub(r"<head(\s[^>]*)?>", lambda m: f"{m.group(0)}{head}", page, count=1, flags=re.I)
    if "</body>" in page.lower():
        cut = page.lower().rindex("</body>")
        return page[:cut] + _CHECK_SCRIPT + page[cut:]
    return page + _CHECK_SCRIPT


def parse_check(dom: str) -> dict[str, Any]:
    """The JSON the check script wrote into the dumped DOM (BrowserError if it is missing)."""
    match = re.search(rf'<script type="application/json" id="{_CHECK_ID}">(.*?)</script>', dom, flags=re.S)
    if match is None:
        raise BrowserError("the page did not finish loading in Chromium (no load-event result in the dumped DOM)")
    result: dict[str, Any] = json.loads(match.group(1))
    return result


class _SectionTitles(HTMLParser):
    """Collects the text of the ``<h2>`` directly inside each ``<section>`` of a page's source."""

    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []
        self._depth = 0  # open <section> elements
        self._in_h2 = False

    def handle_starttag(self, tag: str, _attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self._depth += 1
        elif tag == "h2" and self._depth:
            self._in_h2 = True
            self.titles.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._depth = max(0, self._depth - 1)
        elif tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.titles[-1] += data


def section_titles(page: str) -> list[str]:
    """Titles (``<h2>`` text) of the ``<section>`` elements in an HTML page's source, in order.

    What the page declares, to compare with :attr:`BrowserCheck.sections` (what Chromium rendered).
    """
    parser = _SectionTitles()
    parser.feed(page)
    parser.close()
    return parser.titles


def screenshot_colours(png: Path) -> tuple[int, float]:
    """(distinct RGB colours, share of the most common colour) of a PNG."""
    import matplotlib.image as mpimg
    import numpy as np

    pixels = mpimg.imread(str(png))  # (H, W, 3 or 4) floats in [0, 1]
    rgb = np.round(np.asarray(pixels)[..., :3] * 255).astype(np.uint32).reshape(-1, 3)
    codes = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    _, counts = np.unique(codes, return_counts=True)
    return int(len(counts)), float(counts.max() / codes.size)


def render_check(
    html: Path,
    out_png: Path,
    window: tuple[int, int] = (1280, 1600),
    timeout_s: float = 120.0,
    budget_ms: int = 5_000,
    chromium: str | None = None,
) -> BrowserCheck:
    """Open ``html`` in headless Chromium, write a screenshot to ``out_png`` and report what rendered.

    Args:
        html: the report page.
        out_png: where the screenshot goes (parent folders are created).
        window: viewport width and height in pixels (the screenshot's size).
        timeout_s: give up on Chromium after this many seconds.
        budget_ms: virtual time Chromium grants the page before dumping it.
        chromium: the executable (default :func:`find_chromium`).

    Returns:
        A :class:`BrowserCheck`.

    Raises:
        BrowserError: no Chromium, it failed or timed out, or the page never fired ``load``.
    """
    html, out_png = Path(html), Path(out_png)
    if not html.is_file():
        raise BrowserError(f"{html}: no such page")
    exe = chromium or find_chromium()
    if exe is None:
        raise BrowserError(
            "no Chromium found (tried $LMBRICKS_CHROMIUM and " + ", ".join(CHROMIUM_NAMES) + "); "
            "on Debian: `make browser` or `apt-get install chromium`"
        )
    out_png = out_png.resolve()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="lmbricks-chromium-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(with_check_script(html.read_text(encoding="utf-8"), html.parent), encoding="utf-8")
        cmd = chromium_command(exe, copy.as_uri(), out_png, Path(tmp) / "profile", window, budget_ms)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"Chromium did not finish {html} within {timeout_s:.0f} s") from None
    if done.returncode != 0 or not out_png.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise BrowserError(f"Chromium failed on {html} (exit {done.returncode}):\n{tail}")
    return _check_of(html, out_png, parse_check(done.stdout))


def _check_of(html: Path, out_png: Path, seen: dict[str, Any]) -> BrowserCheck:
    """The :class:`BrowserCheck` of what the page's check script reported and the screenshot shows."""
    sections = [s for s in seen["sections"] if isinstance(s, dict)]
    colours, dominant = screenshot_colours(out_png)
    return BrowserCheck(
        html=html,
        screenshot=out_png,
        title=str(seen["title"]),
        images_total=int(seen["images_total"]),
        images_loaded=int(seen["images_loaded"]),
        broken_images=[str(x) for x in seen["broken_images"]],
        images_without_alt=int(seen["images_without_alt"]),
        sections=[str(s["title"]) for s in sections if s["rendered"]],
        hidden_sections=[str(s["title"] or s["id"]) for s in sections if not s["rendered"]],
        toc_links={str(t["href"]): bool(t["target"]) for t in seen["toc_links"]},
        page_height=int(seen["page_height"]),
        distinct_colours=colours,
        dominant_share=dominant,
    )
