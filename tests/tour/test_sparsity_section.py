"""Tour section ``sparsity``: the masking curve on the default model (integration) and a tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.tour.quick_tour import QuickTour

from lmbricks.report import Report
from lmbricks.tour.run import TourContext
from lmbricks.tour.sparsity import QUICK_SPARSITIES, masking_section

DOMAINS = {"en_prose", "code", "math", "zh", "dialogue"}


def _fake_texts(domain: str, split: str) -> list[str]:
    return [f"{domain} {split}: " + "the cat sat on the mat, def f(x): return x + 1; 你好 " * 60]


def test_masking_section_on_tiny_model(tiny_llama: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok: Any = AutoTokenizer.from_pretrained(tiny_llama)
    ctx = TourContext("tiny", tiny_llama, tmp_path, True, Report("t"), log=lambda _m: None)
    rows = masking_section(ctx, model, tok, texts_of=_fake_texts)
    measured = ctx.results["sparsity"]
    assert set(measured["ppl_change"]) == {f"{r:g}" for r in QUICK_SPARSITIES}
    assert all(v == 0.0 for v in measured["ppl_change"]["0"].values())  # rho 0 is the model itself
    assert set(measured["ppl_change"]["0.5"]) == DOMAINS
    assert 0.0 < measured["top_share_norm"]["top 10%"] < measured["top_share_norm"]["top 50%"] <= 1.0
    assert (tmp_path / "sparsity_masking.png").exists()
    assert [r[0] for r in rows] == ["sparsity", "sparsity"]
    assert "Activation sparsity" in ctx.report.render()


@pytest.mark.integration
def test_sparsity_section_quick_on_default_model(quick_tour: QuickTour) -> None:
    results = quick_tour.results()
    measured = results["sparsity"]
    assert set(measured["mean_change"]) == {f"{r:g}" for r in QUICK_SPARSITIES}
    assert set(measured["ppl_change"]["0.5"]) == DOMAINS
    # masking more neurons per token costs more perplexity on average
    assert 0.0 < measured["mean_change"]["0.5"] < measured["mean_change"]["0.8"]
    assert "data:image/png;base64" in quick_tour.section_page("Activation sparsity")
    assert "sparsity" in results["timings_s"]
