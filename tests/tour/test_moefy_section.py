"""Tour section ``moefy``: MoEfication quality and FFN speed (integration), and on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.tour.quick_tour import QuickTour

from lmbricks.moefy import is_moefied
from lmbricks.report import Report
from lmbricks.tour.moefy import moefication_section
from lmbricks.tour.run import TourContext

DOMAINS = {"en_prose", "code", "math", "zh", "dialogue"}


def _fake_texts(domain: str, split: str) -> list[str]:
    return [f"{domain} {split}: " + "the cat sat on the mat, def f(x): return x + 1; 你好 " * 60]


def test_moefication_section_on_tiny_model_builds_then_reuses(tiny_llama: Path, tmp_path: Path) -> None:
    ctx = TourContext("tiny", tiny_llama, tmp_path, True, Report("t"), log=lambda _m: None)
    rows = moefication_section(ctx, texts_of=_fake_texts)
    first = ctx.results["moefy"]
    assert first["built_this_run"] and is_moefied(tmp_path / "cache" / "moefied")
    assert set(first["router_mean_change"]) == {"8", "16"}
    assert set(first["router_ppl_change"]["16"]) == DOMAINS
    assert first["ffn_speedup"]["32"] > 0 and first["ffn_dense_ms"] > 0
    assert (tmp_path / "moefy_quality.png").exists() and len(rows) == 2
    again = TourContext("tiny", tiny_llama, tmp_path, True, Report("t"), log=lambda _m: None)
    moefication_section(again, texts_of=_fake_texts)
    second = again.results["moefy"]
    assert not second["built_this_run"]  # the cached MoEfied model was loaded
    assert second["router_mean_change"] == pytest.approx(first["router_mean_change"], rel=1e-4, abs=1e-6)


@pytest.mark.integration
def test_moefy_section_quick_on_default_model(quick_tour: QuickTour) -> None:
    results = quick_tour.results()
    measured = results["moefy"]
    assert set(measured["router_mean_change"]) == {"8", "16"}
    assert set(measured["router_ppl_change"]["16"]) == DOMAINS
    # fewer experts cost more perplexity and run faster
    assert measured["router_mean_change"]["8"] > measured["router_mean_change"]["16"] > 0
    assert measured["ffn_speedup"]["8"] > measured["ffn_speedup"]["32"]
    assert "data:image/png;base64" in quick_tour.section_page("MoEfication")
    assert is_moefied(quick_tour.out / "cache" / "moefied") and "moefy" in results["timings_s"]
