"""Parameter counts and Chinchilla sizing."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from train_helpers import CLI, cli_env

from lmbricks.errors import ConfigError
from lmbricks.nn import LM, LMConfig
from lmbricks.train.plan import chinchilla, count_parameters, mixtral_8x7b, plan


def test_mixtral_8x7b_total_and_active() -> None:
    c = count_parameters(mixtral_8x7b())
    assert c.total / 1e9 == pytest.approx(46.7, abs=0.05)
    assert c.active / 1e9 == pytest.approx(12.9, abs=0.05)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"tie_embeddings": True, "qkv_bias": True},
        {
            "moe": {"num_experts": 4, "intermediate_size": 16, "shared_expert_intermediate_size": 24},
            "moe_every": 2,
        },
        {"moe": {"num_experts": 4, "intermediate_size": 16, "router": "noisy_topk"}},
    ],
)
def test_counts_equal_the_models_parameters(kw: dict) -> None:
    cfg = LMConfig(vocab_size=50, hidden_size=16, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=40, **kw)
    with torch.device("meta"):
        n = LM(cfg).num_parameters()
    c = count_parameters(cfg)
    assert c.total == n
    assert c.active <= c.total and (c.active < c.total) == (cfg.moe is not None)


def test_chinchilla_both_ways_agree() -> None:
    by_params = chinchilla(params=1e9)
    assert by_params["tokens"] == 20e9 and by_params["flops"] == pytest.approx(6 * 1e9 * 20e9)
    back = chinchilla(flops=by_params["flops"])
    assert back["params"] == pytest.approx(1e9)
    with pytest.raises(ConfigError):
        chinchilla()


def test_plan_suggests_a_shape_near_the_budget() -> None:
    out = plan(params=135e6)
    assert out["suggested_shape"]["params"] == pytest.approx(135e6, rel=0.15)


def test_cli_plan_json_for_a_yaml_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    y = tmp_path / "m.yaml"
    y.write_text(
        "model: {vocab_size: 32000, hidden_size: 4096, num_layers: 32, num_heads: 32, num_kv_heads: 8,\n"
        "  intermediate_size: 14336, moe: {num_experts: 8, top_k: 2, intermediate_size: 14336}}\n"
    )
    res = subprocess.run(
        [*CLI, "plan", "--config", str(y), "--json"],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=True,
    )
    out = json.loads(res.stdout)
    assert round(out["parameters"]["total"] / 1e9, 1) == 46.7
    assert round(out["parameters"]["active"] / 1e9, 1) == 12.9
    assert out["chinchilla"]["tokens"] == pytest.approx(20 * out["parameters"]["active"])


def test_parse_count_reads_suffixes_and_names_the_option() -> None:
    from lmbricks.errors import ConfigError
    from lmbricks.train.plan import parse_count

    assert parse_count("125M") == 125e6 and parse_count("1.3b") == 1.3e9 and parse_count("7e9") == 7e9
    assert parse_count(" 4096 ") == 4096.0 and parse_count("2K") == 2000.0
    with pytest.raises(ConfigError, match="--params: cannot read 'lots'"):
        parse_count("lots")
