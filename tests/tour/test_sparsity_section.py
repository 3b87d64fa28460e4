"""Tour section ``sparsity``: the masking curve on the default model (integration) and a tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lmbricks.report import Report
from lmbricks.tour import run_tour
from lmbricks.tour.run import TourContext
from lmbricks.tour.sparsity import QUICK_SPARSITIES, masking_section, sparsity_section

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
def test_sparsity_section_quick_on_default_model(tmp_path: Path) -> None:
    run_tour(tmp_path, quick=True, sections=[("sparsity", sparsity_section)])
    results = json.loads((tmp_path / "results.json").read_text())
    measured = results["sparsity"]
    assert set(measured["mean_change"]) == {f"{r:g}" for r in QUICK_SPARSITIES}
    assert set(measured["ppl_change"]["0.5"]) == DOMAINS
    # masking more neurons per token costs more perplexity on average
    assert 0.0 < measured["mean_change"]["0.5"] < measured["mean_change"]["0.8"]
    page = (tmp_path / "report.html").read_text()
    assert "Activation sparsity" in page and "data:image/png;base64" in page
    assert "sparsity" in results["timings_s"]
