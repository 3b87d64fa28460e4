"""The dense-vs-MoE comparison: equal active parameters, routing statistics, the whole pipeline on tiny data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lmbricks.train.arms import ARMS, arm_models, domain_expert_load, mutual_information_bits
from lmbricks.train.compare import compare_arms, interpretation, parse_compare_config, summary_table
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
    plan = parse_compare_config({
        "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "expert_intermediate": 8},
        "steps": 4,
        "eval_every": 2,
        "batch_size": 4,
        "seq_len": 16,
        "lr": 1e-2,
        "train_bytes": 0,
        "val_blocks": 2,
        "seed": 0,
    })  # fmt: skip
    val = {"low": low[:2], "high": high[:2]}
    data = compare_arms(
        plan,
        tokenizer,
        "lmbricks-tiny",
        tmp_path,
        domains=["low", "high"],
        log=lambda _: None,
        train_chunks=torch.cat([low[2:], high[2:]]),
        val_blocks=val,
    )
    arms = data.arms
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


def test_domain_expert_load_counts_what_the_trace_reads() -> None:
    """The counts from the model's MoE outputs equal lmbricks.trace's on the same blocks."""
    from lmbricks.nn.config import LMConfig
    from lmbricks.nn.model import LM
    from lmbricks.trace import capture_routing, domain_histograms, load_stats

    torch.manual_seed(0)
    model = LM(LMConfig(vocab_size=50, **arm_models(16, 2, 2, expert_intermediate=8, num_kv_heads=1)["top2"]))
    gen = torch.Generator().manual_seed(1)
    blocks = {"a": torch.randint(0, 25, (5, 12), generator=gen), "b": torch.randint(25, 50, (3, 12), generator=gen)}
    load = domain_expert_load(model, blocks, batch_size=2)
    docs = [row.tolist() for ids in blocks.values() for row in ids]
    trace = capture_routing(model, docs, [d for d, ids in blocks.items() for _ in range(len(ids))])
    hist = domain_histograms(trace)
    assert load["layers"] == trace.layers == [0, 1]
    for d in blocks:
        counts = hist[d].double()
        assert load["share"][d] == (counts / counts.sum(-1, keepdim=True).clamp(min=1)).tolist()
    assert load["max_over_mean"] == [s.max_over_mean for s in load_stats(hist["all"])]
