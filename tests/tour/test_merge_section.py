"""Tour section: merging two brick variants of the default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.tour.quick_tour import QuickTour

from lmbricks.report import Report
from lmbricks.tour import run_tour
from lmbricks.tour.merge import _scores, merge_section
from lmbricks.tour.run import TourContext


def test_scores_are_read_back_only_for_the_same_merges_and_settings(tiny_llama: Path, tmp_path: Path) -> None:
    def ctx(quick: bool) -> TourContext:
        return TourContext(str(tiny_llama), tiny_llama, tmp_path, quick, Report("t", "t"), precision="bf16")

    built, path = {"+a": tiny_llama}, tmp_path / "scores.json"
    first, measured = _scores(ctx(True), built, path, rebuilt=False)
    assert measured and set(first) == {"base", "+a"} and first["+a"] == first["base"]  # the same weights
    assert _scores(ctx(True), built, path, rebuilt=False) == (first, False)  # read back, same figures
    assert _scores(ctx(True), built, path, rebuilt=True)[1] is True  # a merge built in this run: measured
    path.write_text(json.dumps({"key": {}, "bits_per_byte": {"base": {}}}))  # another run's record
    assert _scores(ctx(True), built, path, rebuilt=False) == (first, True)
    bigger, measured = _scores(ctx(False), built, path, rebuilt=False)  # more bytes: measured again
    assert measured and bigger != first


@pytest.mark.integration
def test_merge_section_on_default_model(quick_tour: QuickTour, tmp_path: Path) -> None:
    assert "data:image/png;base64" in quick_tour.section_page("Merging bricks")
    bpb = quick_tour.results()["merge"]["bits_per_byte"]
    assert set(bpb) == {"base", "+zh", "+math", "ties(+zh, +math)"}
    # scored in the tour's inference precision (the merges are stored in bf16)
    assert quick_tour.results()["merge"]["precision"] == quick_tour.results()["precision"]
    # each brick helps its own domain, and the merge keeps part of both gains
    assert bpb["+zh"]["zh"] < bpb["base"]["zh"] and bpb["+math"]["math"] < bpb["base"]["math"]
    merged = bpb["ties(+zh, +math)"]
    assert merged["zh"] < bpb["base"]["zh"] and merged["math"] < bpb["base"]["math"]
    # a second run (the section alone, on a copy of the tour's cache) reuses the cached merges
    run_tour(quick_tour.copy_cache(tmp_path, "merge"), quick=True, sections=[("merge", merge_section)])
    again = json.loads((tmp_path / "results.json").read_text())["merge"]
    assert again["merge_seconds"]["ties"] == 0.0
    # ... and their scores: the same figures, read rather than measured again
    assert again["scores_cached"] is True and quick_tour.results()["merge"]["scores_cached"] is False
    assert again["bits_per_byte"] == bpb


def test_merge_precision_figures_in_the_docs_are_the_json() -> None:
    """docs/performance.md's bf16-against-fp32 figures of the merge section are its committed run's."""
    docs = Path(__file__).resolve().parents[2] / "docs"
    run = json.loads((docs / "bench" / "tour-merge-2026-12-07.json").read_text())
    fp32, bf16 = run["runs"]["fp32"]["bits_per_byte"], run["runs"]["auto"]["bits_per_byte"]
    worst = max(abs(bf16[m][d] / fp32[m][d] - 1) for m in fp32 for d in fp32[m])
    assert worst == pytest.approx(run["bpb_change_bf16_vs_fp32_max_abs"], abs=1e-5) and worst <= 0.003
    text = " ".join((docs / "performance.md").read_text().split())
    assert f"at most {100 * worst:.2f}% against fp32" in text
    assert f"from {run['runs']['fp32']['cpu_s']:.0f} s" in text and f"to {run['runs']['auto']['cpu_s']:.0f} s" in text
    for v in ("zh", "math"):
        kept = (1 - bf16["ties(+zh, +math)"][v] / bf16["base"][v]) / (1 - bf16[f"+{v}"][v] / bf16["base"][v])
        assert kept == pytest.approx(run["gain_kept"]["bf16"][v], abs=5e-4)
