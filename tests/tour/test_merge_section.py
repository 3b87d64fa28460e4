"""Tour section: merging two brick variants of the default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.tour.quick_tour import QuickTour

from lmbricks.tour import run_tour
from lmbricks.tour.merge import merge_section


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
    assert json.loads((tmp_path / "results.json").read_text())["merge"]["merge_seconds"]["ties"] == 0.0
