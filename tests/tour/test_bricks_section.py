"""The tour's bricks section: effect table, routing accuracy and a LoraHub mix, measured live."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.tour.brick_world import ALPHABETS, make_brick_world
from tests.tour.quick_tour import QuickTour

from lmbricks.tour import TourFailed, run_tour
from lmbricks.tour.bricks import bricks_section


def _check_results(res: dict, domains: set[str]) -> None:
    eff = res["effects"]["ppl"]
    assert set(eff) == {"base", *domains}
    for row in eff.values():
        assert set(row) >= domains and all(v > 1 for v in row.values())
    routing = res["routing"]
    assert set(routing) == {*domains, "all"}
    assert 0 <= routing["all"]["accuracy"] <= 1 and routing["all"]["docs"] == sum(routing[d]["docs"] for d in domains)
    hub = res["lorahub"]
    assert set(hub["weights"]) == domains and all(abs(w) <= 1.5 for w in hub["weights"].values())
    assert len(hub["objective"]) == hub["budget"]


def test_bricks_section_on_tiny_model(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_brick_world(tmp_path / "world", tiny_llama, monkeypatch)
    out = tmp_path / "tour"
    report = run_tour(out, quick=True, model_ref=str(tiny_llama), sections=[("bricks", bricks_section)])
    res = json.loads((out / "results.json").read_text())["bricks"]
    _check_results(res, set(ALPHABETS))
    eff = res["effects"]["ppl"]
    # A brick changes the model: its rows differ from the base's.
    assert all(eff[d] != eff["base"] for d in ALPHABETS)
    # Disjoint alphabets: the router finds every domain.
    assert res["routing"]["all"]["accuracy"] == 1.0
    # With perfect routing the routed perplexity is the oracle's.
    assert res["routing"]["all"]["ppl_routed"] == pytest.approx(res["routing"]["all"]["ppl_oracle"], rel=1e-4)
    assert res["routing_settings"]["centroids_computed"] == 3
    page = report.read_text()
    assert "Customized bricks" in page and page.count("data:image/png;base64") == 3
    # A second run reads every centroid from the cache.
    run_tour(out, quick=True, model_ref=str(tiny_llama), sections=[("bricks", bricks_section)])
    again = json.loads((out / "results.json").read_text())["bricks"]["routing_settings"]
    assert (again["centroids_cached"], again["centroids_computed"]) == (3, 0)


def test_bricks_section_without_bricks(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LMBRICKS_BRICKS", str(tmp_path / "none"))
    page = run_tour(tmp_path, quick=True, model_ref=str(tiny_llama), sections=[("bricks", bricks_section)]).read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["bricks"] == {"available": False}
    # No bricks for this model is a visible skip, not a pass.
    assert results["sections"][0]["status"] == "skipped" and "no bricks are catalogued" in page


def test_refused_bricks_fail_the_section(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bricks = make_brick_world(tmp_path / "world", tiny_llama, monkeypatch)
    record_path = bricks["zh"] / "lmbricks.json"
    record = json.loads(record_path.read_text())
    record["bricks"]["adapter"]["base_sha256"] = "0" * 64  # as if trained on another conversion of the base
    record_path.write_text(json.dumps(record))
    out = tmp_path / "tour"
    with pytest.raises(TourFailed, match="bricks"):
        run_tour(out, quick=True, model_ref=str(tiny_llama), sections=[("bricks", bricks_section)], log=lambda _: None)
    results = json.loads((out / "results.json").read_text())
    assert results["sections"][0]["status"] == "failed" and "bricks" not in results  # no effects were passed off
    assert "brick 'zh' was trained on" in results["sections"][0]["error"]
    page = (out / "report.html").read_text()
    assert "Customized bricks" in page and "failed: ConfigError: brick" in page


@pytest.mark.integration
def test_bricks_section_on_default_model(quick_tour: QuickTour) -> None:
    res = quick_tour.results()["bricks"]
    bricks = {"code", "dialogue", "math", "zh"}
    _check_results(res, bricks)
    eff = res["effects"]["ppl"]
    assert set(res["effects"]["domains"]) == bricks  # the bricks' own domains
    # Every shipped brick lowers its own domain's held-out perplexity, even on the short quick text.
    for d in bricks:
        assert eff[d][d] < eff["base"][d], d
    assert res["routing"]["all"]["accuracy"] >= 0.5
    assert quick_tour.section_page("Customized bricks").count("data:image/png;base64") == 3
