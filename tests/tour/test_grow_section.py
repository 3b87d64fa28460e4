"""The tour's grow section: assembles (then reuses) the bricks' MoE, evaluates it, leaves it for tracing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from tests.tour.quick_tour import QuickTour

from lmbricks.tour import run_tour
from lmbricks.tour.grow import CACHE_NAME, grow_section

KINDS = {
    "t_prose": ["the", "lady", "house", "garden", "letter", "morning", "walk", "said"],
    "t_code": ["def", "return", "import", "class", "self", "if", "else", "for", "in"],
}


def _brick(base: Path, out: Path, domain: str, seed: int) -> None:
    from lmbricks.adapters.base import base_model
    from lmbricks.adapters.brick import LoraPair, brick_record, save_factors
    from lmbricks.checkpoint import CheckpointReader, atomic_directory, write_provenance

    gen = torch.Generator().manual_seed(seed)
    reader = CheckpointReader(base)
    pairs = {}
    for key in reader:
        if key.endswith(("gate_proj.weight", "up_proj.weight", "down_proj.weight")):
            o, i = reader.info(key).shape
            pairs[key.removesuffix(".weight")] = LoraPair(
                torch.randn(4, i, generator=gen), torch.randn(o, 4, generator=gen), 0.5
            )
    b = base_model(base)
    with atomic_directory(out) as tmp:
        save_factors(tmp, pairs, base_model=b.name)
        record = brick_record(name=domain, base_model=b.name, base_sha256=b.sha256, rank=4, alpha=4.0,
                              targets=["gate_proj", "up_proj", "down_proj"], domain=domain)  # fmt: skip
        write_provenance(tmp, command="test", recipe=None, inputs={"base": base}, bricks=record)


def test_grow_section_on_tiny_model(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbricks.data import add_domain

    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LMBRICKS_BRICKS", str(tmp_path / "shipped"))
    rng = random.Random(0)
    for seed, (name, words) in enumerate(KINDS.items()):
        text = "\n\n".join(" ".join(rng.choice(words) for _ in range(50)) for _ in range(150))
        (tmp_path / f"{name}.txt").write_text(text)
        add_domain(name, [tmp_path / f"{name}.txt"], tokenizer=None)
        _brick(tiny_llama, tmp_path / "shipped" / tiny_llama.name / name, name, seed)
    out = tmp_path / "tour"
    report = run_tour(out, quick=True, model_ref=str(tiny_llama), sections=[("grow", grow_section)])
    page = report.read_text()
    assert "Grow: a mixture of experts from bricks" in page and page.count("data:image/png;base64") >= 2
    results = json.loads((out / "results.json").read_text())
    grow = results["grow"]
    assert results["routed_model"] == str(out / "cache" / CACHE_NAME) and grow["reused"] is False
    assert set(grow["bits_per_byte"]["MoE top-1"]) == set(KINDS) and set(grow["experts"]) == set(KINDS)
    shares = grow["expert_share"]["t_code"]
    assert abs(sum(shares.values()) - 1) < 1e-2
    again = run_tour(out, quick=True, model_ref=str(tiny_llama), sections=[("grow", grow_section)])
    assert again.exists() and json.loads((out / "results.json").read_text())["grow"]["reused"] is True


@pytest.mark.integration
def test_grow_section_on_default_model(quick_tour: QuickTour) -> None:
    from lmbricks.eval import DEFAULT_DOMAINS

    page = quick_tour.section_page("Grow: a mixture of experts from bricks")
    assert page.count("data:image/png;base64") >= 2
    results = quick_tour.results()
    assert Path(results["routed_model"]).is_dir()
    grow = results["grow"]
    assert set(grow["experts"]) == {"code", "math", "zh", "dialogue"}
    assert set(grow["bits_per_byte"]["base"]) == set(DEFAULT_DOMAINS)
    # a domain router sends most Chinese tokens to the Chinese brick's expert
    assert grow["expert_share"]["zh"]["zh"] > 0.5
