"""Tour section ``moe``: dense vs top-2 vs Switch at equal active parameters, trained live and cached."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lmbricks.tour.moe import (
    ARMS,
    arm_models,
    compare_arms,
    interpretation,
    moe_section,
    mutual_information_bits,
    summary_table,
)
from lmbricks.train.plan import count_parameters


def test_arms_have_equal_active_ffn_parameters() -> None:
    from lmbricks.nn.config import LMConfig

    models = arm_models(64, 2, 4, expert_intermediate=96)
    counts = {arm: count_parameters(LMConfig(vocab_size=100, **m)) for arm, m in models.items()}
    assert counts["dense"].dense_ffn == counts["top2"].active_experts == counts["switch"].active_experts
    assert counts["top2"].experts == 4 * counts["dense"].dense_ffn  # 8 experts of half the width
    assert counts["switch"].experts == 8 * counts["dense"].dense_ffn
    assert counts["top2"].routers == counts["switch"].routers == 2 * 8 * 64
    assert counts["dense"].active + counts["top2"].routers == counts["top2"].active == counts["switch"].active


def test_mutual_information_of_routing_tables() -> None:
    independent = torch.tensor([[10.0, 30.0], [20.0, 60.0]])  # rows proportional: I = 0
    assert mutual_information_bits(independent) == pytest.approx(0.0, abs=1e-12)
    aligned = torch.eye(4) * 25  # each domain owns one expert: I = H(domain) = 2 bits
    assert mutual_information_bits(aligned) == pytest.approx(2.0)
    assert mutual_information_bits(torch.zeros(3, 3)) == 0.0


def test_compare_arms_on_a_tiny_tokenizer(tmp_path: Path) -> None:
    """The whole comparison on synthetic token blocks (no corpus): curves, loads, table, text."""
    from lmbricks.testing import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    gen = torch.Generator().manual_seed(0)
    vocab = len(tokenizer)
    # two "domains" with disjoint token ranges, so routing can tell them apart
    low = torch.randint(0, vocab // 2, (24, 16), generator=gen)
    high = torch.randint(vocab // 2, vocab, (24, 16), generator=gen)
    plan = {
        "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "expert_intermediate": 8},
        "steps": 4,
        "eval_every": 2,
        "batch_size": 4,
        "seq_len": 16,
        "lr": 1e-2,
        "train_bytes": 0,
        "val_blocks": 2,
        "seed": 0,
    }
    val = {"low": low[:2], "high": high[:2]}
    data = compare_arms(
        tokenizer,
        "lmbricks-tiny",
        tmp_path,
        plan,
        domains=["low", "high"],
        log=lambda _: None,
        train_chunks=torch.cat([low[2:], high[2:]]),
        val_blocks=val,
    )
    arms = data["arms"]
    assert list(arms) == list(ARMS)
    for arm, r in arms.items():
        assert [step for step, _ in r["val_curve"]] == [2, 4]
        assert set(r["val_curve"][-1][1]) == {"low", "high", "mean"}
        assert r["tokens"] == 4 * 4 * 16
        assert not (tmp_path / arm).exists()  # run directories are removed after scoring
        if arm == "dense":
            assert "expert_load" not in r
            continue
        load = r["expert_load"]
        for shares in load["share"].values():  # (L, E) shares of each domain sum to 1 per layer
            assert all(math.isclose(sum(row), 1.0, abs_tol=1e-9) for row in shares)
        assert 0.0 <= load["mutual_information_bits"][0] <= load["domain_entropy_bits"] + 1e-9
        assert load["domain_entropy_bits"] == pytest.approx(1.0)  # two domains, equal tokens
    rows, cols = summary_table(arms)
    assert len(rows) == 3 and cols[-2:] == ["low", "high"]
    text = interpretation(arms)
    best = min(arms, key=lambda a: arms[a]["val_curve"][-1][1]["mean"])
    assert f"{arms[best]['val_curve'][-1][1]['mean']:.3f}" in text


@pytest.mark.integration
def test_moe_section_quick_on_default_model(tmp_path: Path) -> None:
    from lmbricks.tour import run_tour

    logs: list[str] = []
    report = run_tour(tmp_path, quick=True, sections=[("moe", moe_section)], log=logs.append)
    page = report.read_text()
    assert "Dense vs mixture of experts" in page and "data:image/png;base64" in page
    results = json.loads((tmp_path / "results.json").read_text())
    arms = results["moe"]["arms"]
    assert set(arms) == set(ARMS)
    assert set(arms["top2"]["expert_load"]["share"]) == {"en_prose", "code", "math", "zh", "dialogue"}
    assert (tmp_path / "moe_val_loss.png").exists() and (tmp_path / "moe_domain_load.png").exists()
    first = results["timings_s"]["moe"]
    # a second run reuses the cached comparison instead of training again
    run_tour(tmp_path, quick=True, sections=[("moe", moe_section)], log=logs.append)
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["moe"] == results["moe"]
    assert "moe: reusing cached comparison" in logs
    assert again["timings_s"]["moe"] < first
