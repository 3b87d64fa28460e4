"""Tour section ``align``: a reward model, best-of-n against it and a short RL run, in the report and results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.tour.quick_tour import QuickTour

from lmbricks.align.bon import bon_kl
from lmbricks.tour import run_tour
from lmbricks.tour.align import QUICK, align_section

TITLE = "Alignment: best-of-n and RL against a reward model"


def _check(tmp_path: Path, page: str) -> dict:
    """Checks on a tour directory's figures and files, and on the section's part of its report (``page``)."""
    assert TITLE in page and page.count("data:image/png;base64") >= 1
    results = json.loads((tmp_path / "results.json").read_text())
    al = results["align"]
    per_n = al["best_of_n"]
    assert [p["n"] for p in per_n] == list(QUICK.ns)
    assert all(abs(p["kl"] - bon_kl(p["n"])) < 1e-12 for p in per_n)
    rewards = [p["mean_reward"] for p in per_n]
    assert rewards == sorted(rewards)  # one set of samples serves every n: the best of more is never worse
    assert len(al["rl"]) == QUICK.rl_steps and al["rl"][0]["sampled_tokens"] > 0
    assert al["rl"][0]["sample_cpu_s"] > 0 and al["rl"][0]["update_cpu_s"] > 0
    assert 0 <= al["reward_model"]["test_accuracy"] <= 1 and al["reward_model"]["train_pairs"] > 0
    assert (tmp_path / "align-rl" / "policy" / "lmbricks.json").exists()
    assert "align" in results["timings_s"]
    return al


def test_align_section_on_tiny_model(tiny_llama: Path, tmp_path: Path) -> None:
    run_tour(tmp_path, quick=True, model_ref=str(tiny_llama), sections=[("align", align_section)], log=lambda _: None)
    _check(tmp_path, (tmp_path / "report.html").read_text())


@pytest.mark.integration
def test_align_section_quick_on_default_model(quick_tour: QuickTour) -> None:
    """The section's part of the shared quick tour (``lmbricks tour --quick`` runs it)."""
    quick_tour.results()  # the tour succeeded
    al = _check(quick_tour.out, quick_tour.section_page(TITLE))
    first, last = al["reward_model"]["train_loss_first_last"]
    assert last < first  # the reward model learns on its training pairs
