"""Tour section ``tuning``: a few-shot curve on langid and a reward probe against the LM's ranking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.tour.quick_tour import QuickTour

from lmbricks.reward.probe import train_linear_head
from lmbricks.tour import run_tour
from lmbricks.tour.tuning import tuning_section


def _check(tmp_path: Path, shots: list[int], page: str | None = None) -> dict:
    """The section's results in the tour folder ``tmp_path``; ``page``: its part of the report (the whole
    report when None, which must then be a report of this section alone)."""
    page = (tmp_path / "report.html").read_text() if page is None else page
    assert "Prompting and reward models" in page and page.count("data:image/png;base64") >= 2
    results = json.loads((tmp_path / "results.json").read_text())
    tuning = results["tuning"]
    curve = tuning["fewshot_langid"]
    assert [c["shots"] for c in curve["conditions"]] == shots
    for c in curve["conditions"]:
        assert 0 <= c["correct"] <= c["n"] and c["ci95"][0] <= c["accuracy"] <= c["ci95"][1]
    reward = tuning["reward"]
    for key in ("probe", "lm_loglik"):
        assert reward[key]["n"] == reward["pairs"]["test"] and 0 <= reward[key]["accuracy"] <= 1
    assert "tuning" in results["timings_s"]
    return tuning


def test_linear_head_separates_separable_pairs() -> None:
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(8, generator=gen)
    rejected = torch.randn(40, 8, generator=gen)
    chosen = rejected + 0.5 * direction + 0.05 * torch.randn(40, 8, generator=gen)
    w = train_linear_head(chosen, rejected)
    assert bool(((chosen - rejected) @ w > 0).all())
    assert torch.equal(torch.sign(w), torch.sign(direction))  # it points along the preference direction


def test_tuning_section_on_tiny_model(tiny_llama: Path, tmp_path: Path) -> None:
    run_tour(tmp_path, quick=True, model_ref=str(tiny_llama), sections=[("tuning", tuning_section)], log=lambda _: None)
    tuning = _check(tmp_path, [0, 1, 4])
    assert tuning["reward"]["pairs"] == {"train": 12, "test": 12}


@pytest.mark.integration
def test_tuning_section_quick_on_default_model(quick_tour: QuickTour) -> None:
    tuning = _check(quick_tour.out, [0, 1, 4], quick_tour.section_page("Prompting and reward models"))
    # the default model does learn the reward direction on its training pairs
    first, last = tuning["reward"]["train_loss_first_last"]
    assert last < first
