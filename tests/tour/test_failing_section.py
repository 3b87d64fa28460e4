"""A failing section does not take the report with it: the report is written, the failure shown and marked.

No default model: the sections are small fakes run on the tiny Llama of the fixtures.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmbricks.errors import ConfigError
from lmbricks.tour import SkipSection, TourContext, TourFailed, run_tour
from lmbricks.tour import run as tour_run
from lmbricks.tour.run import SECTION_NAMES, SummaryRow, default_sections, reproduce_command, select_sections


def passing(ctx: TourContext) -> list[SummaryRow]:
    ctx.report.section("A passing section", "It measured something.")
    ctx.results["passing"] = {"value": 42}
    return [("passing", "the answer", "42")]


def crashing(ctx: TourContext) -> list[SummaryRow]:
    ctx.report.section("A crashing section", "Half of its work is shown before it breaks.")
    raise RuntimeError("the disk is on fire")


def refusing(ctx: TourContext) -> list[SummaryRow]:
    raise ConfigError("brick 'zh' was trained on another base: config field rope_theta differs")


def skipping(ctx: TourContext) -> list[SummaryRow]:
    ctx.report.section("An optional section")
    raise SkipSection("no bricks are catalogued for this model")


def after(ctx: TourContext) -> list[SummaryRow]:
    ctx.report.section("The last section", "Runs after the failures.")
    return [("after", "still ran", "yes")]


SECTIONS = [("passing", passing), ("crashing", crashing), ("refusing", refusing), ("skipping", skipping),
            ("after", after)]  # fmt: skip


def _summary(page: str) -> str:
    return page[page.index('id="summary"') : page.index("<section")]


def test_failing_sections_are_reported_and_the_rest_still_run(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "tour"
    with pytest.raises(TourFailed) as info:
        run_tour(out, quick=True, model_ref=str(tiny_llama), sections=SECTIONS, log=lambda _: None)
    failed = info.value
    assert failed.failed == ["crashing", "refusing"] and failed.report == out / "report.html"
    assert isinstance(failed.__cause__, RuntimeError)  # the first failure, for Python callers' tracebacks
    page = (out / "report.html").read_text()

    # Every section is in the report, in order, the ones after the failures included.
    titles = ["A passing section", "A crashing section", "Section refusing", "An optional section", "The last section"]
    positions = [page.index(f"<h2>{t}") for t in titles]
    assert positions == sorted(positions)
    # The crash: type and message, the command that reproduces it, a short traceback (collapsed).
    assert "failed: RuntimeError: the disk is on fire" in page
    assert "Half of its work is shown before it breaks." in page
    crash = page[page.index("<h2>A crashing section") : page.index("<h2>Section refusing")]
    assert html.escape(reproduce_command("crashing", out, True, str(tiny_llama))) in crash
    assert "lmbricks tour --section crashing --out" in crash and "--quick" in crash
    assert "<details><summary>Traceback</summary>" in crash and "in crashing" in crash
    # A user error (LmbricksError) gets its message and the command, no traceback; it had no heading of its own.
    refused = page[page.index("<h2>Section refusing") : page.index("<h2>An optional section")]
    assert html.escape("failed: ConfigError: brick 'zh' was trained on another base") in refused
    assert "lmbricks tour --section refusing" in refused and "<details>" not in refused
    # A skip says why, visibly.
    assert "skipped: no bricks are catalogued for this model" in page

    summary = _summary(page)
    assert '<tr class="failed"><td>crashing</td><td>FAILED</td><td>RuntimeError: the disk is on fire</td>' in summary
    assert '<tr class="failed"><td>refusing</td><td>FAILED</td>' in summary
    assert '<tr class="skipped"><td>skipping</td><td>skipped</td>' in summary
    assert "<tr><td>passing</td><td>the answer</td><td>42</td></tr>" in summary
    assert "<td>after</td><td>still ran</td>" in summary
    assert "5 section(s): 2 passed, 2 failed (crashing, refusing), 1 skipped (skipping)." in summary

    results = json.loads((out / "results.json").read_text())
    assert results["passing"] == {"value": 42}
    status = {s["name"]: s["status"] for s in results["sections"]}
    assert status == {"passing": "passed", "crashing": "failed", "refusing": "failed", "skipping": "skipped",
                      "after": "passed"}  # fmt: skip
    crash_entry = next(s for s in results["sections"] if s["name"] == "crashing")
    assert crash_entry["error"] == "RuntimeError: the disk is on fire"
    assert crash_entry["reproduce"].startswith("lmbricks tour --section crashing")


def test_a_skip_alone_is_not_a_failure(tiny_llama: Path, tmp_path: Path) -> None:
    path = run_tour(tmp_path, model_ref=str(tiny_llama), sections=[("skipping", skipping), ("after", after)],
                    log=lambda _: None)  # fmt: skip
    page = path.read_text()
    assert 'An optional section <span class="status skipped">skipped</span>' in page
    assert "An optional section (skipped)" in page  # the contents say it too


def test_cli_writes_the_report_then_exits_1(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbricks.cli.main import app

    monkeypatch.setattr(tour_run, "default_sections", lambda: SECTIONS)
    out = tmp_path / "tour"
    result = CliRunner().invoke(app, ["tour", "--quick", "--out", str(out), "--model", str(tiny_llama)])
    assert result.exit_code == 1, result.output
    assert (out / "report.html").is_file() and (out / "results.json").is_file()
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "crashing, refusing" in errors[0], result.output
    assert f"report written to {out / 'report.html'}" in result.output.replace("\n", "")


def test_cli_runs_only_the_named_sections(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbricks.cli.main import app

    monkeypatch.setattr(tour_run, "default_sections", lambda: SECTIONS)
    out = tmp_path / "tour"
    # Given in another order, run in report order; the failing sections are left out, so it passes.
    args = ["tour", "--out", str(out), "--model", str(tiny_llama), "--section", "after", "-s", "passing"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in results["sections"]] == ["passing", "after"]
    # A wrong name is refused before any work, with the nearest name.
    bad = CliRunner().invoke(app, ["tour", "--out", str(tmp_path / "bad"), "--section", "pasing"])
    assert bad.exit_code == 2 and "did you mean 'passing'?" in bad.output
    assert not (tmp_path / "bad").exists()


def test_a_section_that_reports_nothing_fails(tiny_llama: Path, tmp_path: Path) -> None:
    def silent(ctx: TourContext) -> list[SummaryRow]:
        ctx.report.section("A silent section")
        return []  # the shape of a silent skip

    with pytest.raises(TourFailed):
        run_tour(tmp_path, model_ref=str(tiny_llama), sections=[("silent", silent)], log=lambda _: None)
    (entry,) = json.loads((tmp_path / "results.json").read_text())["sections"]
    assert entry["status"] == "failed" and "without a summary row" in entry["error"]


def test_select_sections_keeps_report_order() -> None:
    assert [n for n, _ in select_sections(SECTIONS, ["after", "crashing"])] == ["crashing", "after"]
    with pytest.raises(ConfigError, match="no tour section 'grwo'"):
        select_sections(SECTIONS, ["grwo"])


def test_default_sections_match_the_names_the_cli_offers() -> None:
    assert [name for name, _ in default_sections()] == list(SECTION_NAMES)


def test_reproduce_command_quotes_and_names_only_what_differs() -> None:
    assert reproduce_command("grow", Path("runs/tour"), False, "smollm2-135m-instruct") == (
        "lmbricks tour --section grow --out runs/tour"
    )
    assert reproduce_command("bricks", Path("my runs/t"), True, "/m/x y") == (
        "lmbricks tour --section bricks --out 'my runs/t' --quick --model '/m/x y'"
    )
