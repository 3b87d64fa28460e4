"""The tour's routing-trace section: traces the grow section's MoE, or a cached MoEfied default model."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
from tests.tour.quick_tour import QuickTour

from lmbricks.moefy import is_moefied
from lmbricks.tour import TourContext, run_tour
from lmbricks.tour.run import SummaryRow
from lmbricks.tour.trace import FALLBACK_PREFIX, TraceBudget, fallback_experts, trace_section

# Three domains with disjoint vocabularies, six documents each (the SVM's folds need >= 3 per domain).
TEXTS = {
    "maths": [f"{i} + {i + 1} = {2 * i + 1}; x^2 - {i} = 0 so x = sqrt({i}). " * 3 for i in range(6)],
    "code": [f"def f{i}(x):\n    return x * {i} + len(str(x))\n" * 3 for i in range(6)],
    "prose": [f"The quick brown fox number {i} jumps over the lazy dog and runs home. " * 3 for i in range(6)],
}
BUDGET = TraceBudget(docs_per_domain=6, max_tokens=48, min_tokens=8, folds=3)
SECTION = partial(trace_section, texts=TEXTS, budget=BUDGET)


def test_fallback_experts_divide_the_width() -> None:
    assert fallback_experts(1536) == (16, 4)  # SmolLM2-135M: 96 neurons per expert
    assert fallback_experts(64) == (16, 4)
    assert fallback_experts(12) == (12, 3)
    assert fallback_experts(7) == (7, 1)


def test_fallback_moefies_caches_and_reuses(tiny_llama: Path, tmp_path: Path) -> None:
    report = run_tour(tmp_path, quick=True, model_ref=str(tiny_llama), sections=[("trace", SECTION)])
    results = json.loads((tmp_path / "results.json").read_text())["trace"]
    assert is_moefied(tmp_path / "cache" / f"{FALLBACK_PREFIX}{tiny_llama.name}") and results["reused_cache"] is False
    assert (results["num_experts"], results["top_k"], results["layers"]) == (16, 4, [0, 1])
    assert results["source"] == "moefied" and results["documents"] == 18
    # heatmap rows are each domain's routing distribution at the middle layer
    assert set(results["heatmap"]) == set(TEXTS)
    for shares in results["heatmap"].values():
        assert len(shares) == 16 and math.isclose(sum(shares), 1.0, rel_tol=1e-9) and min(shares) >= 0
    assert results["random_baselines"]["same_top1"] == pytest.approx(1 / 16)
    assert results["random_baselines"]["topk_overlap"] == pytest.approx(1 - math.comb(12, 4) / math.comb(16, 4))
    for c in results["consecutive"]:
        assert 0 <= c["same_top1"] <= c["topk_overlap"] <= 1  # same first choice implies overlapping sets
    # balanced classes, stratified folds: the majority class is right exactly a third of the time
    topic = {r["features"]: r["accuracy"] for r in results["topic"]}
    assert topic["majority class"] == pytest.approx(1 / 3)
    assert {"bag of words", "all layers", "layer 0", "layer 1"} <= set(topic)
    page = report.read_text()
    assert "Routing trace" in page and "MoEfied on the fly" in page and page.count("data:image/png;base64") == 3
    assert all((tmp_path / f"trace_{name}.png").is_file() for name in ("heatmap", "consecutive", "topic"))
    # a second run loads the cached model and its routers give the same routing
    run_tour(tmp_path, quick=True, model_ref=str(tiny_llama), sections=[("trace", SECTION)])
    again = json.loads((tmp_path / "results.json").read_text())["trace"]
    assert again["reused_cache"] is True
    for domain, shares in results["heatmap"].items():
        assert again["heatmap"][domain] == pytest.approx(shares, abs=1e-12)
    assert again["consecutive"] == results["consecutive"]


def test_traces_the_grow_sections_model(tiny_llama: Path, tiny_mixtral: Path, tmp_path: Path) -> None:
    def grow(ctx: TourContext) -> list[SummaryRow]:
        ctx.results["routed_model"] = str(tiny_mixtral)
        return [("grow", "routed model", "tiny mixtral")]

    report = run_tour(tmp_path, quick=True, model_ref=str(tiny_llama), sections=[("grow", grow), ("trace", SECTION)])
    results = json.loads((tmp_path / "results.json").read_text())["trace"]
    assert (results["num_experts"], results["top_k"]) == (4, 2)
    assert results["model_path"] == str(tiny_mixtral) and not list((tmp_path / "cache").glob(f"{FALLBACK_PREFIX}*"))
    assert results["random_baselines"]["topk_overlap"] == pytest.approx(1 - 1 / 6)
    page = report.read_text()
    assert "assembled by the grow section" in page and "domain from routing" in page


@pytest.mark.integration
def test_trace_section_quick_on_default_model(quick_tour: QuickTour) -> None:
    results = quick_tour.results()
    trace = results["trace"]
    assert set(trace["heatmap"]) == {"en_prose", "code", "math", "zh", "dialogue"}
    assert len(trace["layers"]) == 30 and trace["documents"] == 5 * TraceBudget.for_mode(True).docs_per_domain
    assert {r["features"] for r in trace["topic"]} >= {"majority class", "bag of words", "all layers"}
    assert "trace" in results["timings_s"]
    assert quick_tour.section_page("Routing trace").count("data:image/png;base64") == 3
