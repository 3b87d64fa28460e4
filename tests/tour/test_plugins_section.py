"""Tour section ``plugins``: a knowledge plug-in's questions, an InfLLM passkey, an r = 2 prefill saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.tour.quick_tour import QuickTour

from lmbricks.tour import run_tour
from lmbricks.tour.plugins import QUICK, plugins_section

TITLE = "Plug-ins: knowledge, memory, acceleration"


def _check(results: dict, page: str) -> dict:
    """Checks on the section's figures (``results.json``) and its part of the report (``page``)."""
    assert TITLE in page and "data:image/png;base64" in page
    plugins = results["plugins"]
    k = plugins["knowledge"]
    assert k["questions"] >= 1 and 0 <= k["none"] <= k["questions"] and 0 <= k["plugin"] <= k["questions"]
    assert k["steps"] == QUICK.knowledge_steps
    m = plugins["memory"]
    assert len(m["trials"]) == 2 * len(QUICK.lengths) * len(QUICK.depths)
    assert all(t["length"] > m["window"] for t in m["trials"])  # every key is asked beyond the window
    for method, acc in m["accuracy"].items():  # the summary is the trials' own share
        hits = [t["correct"] for t in m["trials"] if t["method"] == method]
        assert acc == sum(hits) / len(hits)
    a = plugins["accelerate"]
    assert a["ratio"] == 2 and a["distill_steps"] == QUICK.distill_steps
    assert 0 < a["prefill_flops_saved"] < 0.5  # r = 2: the lower layers and the head still see every token
    assert a["bpb_change"] == pytest.approx(a["bpb_mean"]["plugin"] / a["bpb_mean"]["plain"] - 1)
    assert "plugins" in results["timings_s"]
    return plugins


def test_plugins_section_on_tiny_model(tiny_llama: Path, tmp_path: Path) -> None:
    run_tour(
        tmp_path, quick=True, model_ref=str(tiny_llama), sections=[("plugins", plugins_section)], log=lambda _: None
    )
    _check(json.loads((tmp_path / "results.json").read_text()), (tmp_path / "report.html").read_text())


@pytest.mark.integration
def test_plugins_section_quick_on_default_model(quick_tour: QuickTour) -> None:
    """The section's part of the shared quick tour (``lmbricks tour --quick`` runs it)."""
    plugins = _check(quick_tour.results(), quick_tour.section_page(TITLE))
    assert plugins["memory"]["window"] == 256
    assert plugins["memory"]["accuracy"] == {"sliding": 0.0, "infllm": 1.0}  # the window forgot, the memory kept
    assert plugins["accelerate"]["prefill_flops_saved"] > 0.3  # 24 of 30 layers on half the sequence
    assert plugins["accelerate"]["prefill_cpu_saved"] > 0.15  # the shorter upper sequence is measurably cheaper
    first, last = plugins["knowledge"]["loss_first_last"]
    assert last < first  # the plug-in learns its document
