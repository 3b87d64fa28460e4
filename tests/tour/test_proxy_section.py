"""The tour's proxy section: the ensemble's perplexity per alpha, a batched decode and its speed."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from tests.tour.brick_world import make_brick_world
from tests.tour.quick_tour import QuickTour

from lmbricks.tour import run_tour
from lmbricks.tour.proxy import ALPHAS, FETCH, proxy_section


def _check_demo(demo: dict) -> None:
    ppl = demo["ppl"]
    # M2 is M1 itself: alpha 0 is the base, alpha 1 is exactly the expert (M3), tokens included.
    assert ppl["anti"] == pytest.approx(ppl["base"], rel=1e-9)
    assert ppl["proxy"]["0.0"] == pytest.approx(ppl["base"], rel=1e-6)
    assert ppl["proxy"]["1.0"] == pytest.approx(ppl["expert"], rel=1e-4)
    assert demo["proxy_equals_expert_tokens"] is True
    assert set(ppl["proxy"]) == {str(a) for a in ALPHAS}
    assert all(v > 0 for v in demo["tokens_per_s"].values())
    assert len(demo["generations"]) == demo["batch"]


def test_proxy_section_on_tiny_model(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_brick_world(tmp_path / "world", tiny_llama, monkeypatch)
    out = tmp_path / "tour"
    report = run_tour(out, quick=True, model_ref=str(tiny_llama), sections=[("proxy", proxy_section)])
    res = json.loads((out / "results.json").read_text())["proxy"]
    assert res["optional_models"] is False
    demo = res["demo"]
    assert demo["domain"] == "code"  # the first of the preferred bricks
    _check_demo(demo)
    assert demo["ppl"]["expert"] != pytest.approx(demo["ppl"]["base"], rel=1e-3)  # the brick does something
    page = report.read_text()
    assert "Proxy-tuning" in page and html.escape(FETCH) in page and page.count("data:image/png;base64") == 2


@pytest.mark.integration
def test_proxy_section_on_default_model(quick_tour: QuickTour) -> None:
    res = quick_tour.results()["proxy"]
    demo = res["demo"]
    if res["optional_models"] and demo["models"] == "qwen":
        assert demo["ppl"]["proxy"]["0.0"] == pytest.approx(demo["ppl"]["base"], rel=1e-6)
    else:
        _check_demo(demo)
        # The shipped brick lowers its domain's perplexity, so alpha 1 beats the base.
        assert demo["ppl"]["proxy"]["1.0"] < demo["ppl"]["base"]
    assert quick_tour.section_page("Proxy-tuning")
