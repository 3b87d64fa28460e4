"""The example recipe and training config of docs/grow.md parse (a typo in the docs fails here)."""

from __future__ import annotations

from pathlib import Path

from lmbricks.grow import load_moe_recipe
from lmbricks.train import load_config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "grow"


def test_example_recipe_and_router_training_config_parse() -> None:
    r = load_moe_recipe(DOCS / "four-bricks.yaml")
    assert r.gate_mode == "domain" and [e.brick for e in r.experts] == ["code", "math", "zh", "dialogue"]
    cfg = load_config(DOCS / "train-routers.yaml")
    assert cfg.trainable == ["routers"] and cfg.task == "lm" and cfg.init_from == "runs/smol-4-bricks"


def test_deepseek_v3_example_recipe_parses() -> None:
    r = load_moe_recipe(DOCS / "deepseek-v3-bricks.yaml")
    assert r.output_family == "glm4_moe" and (r.n_group, r.topk_group) == (2, 1)
    assert r.shared_experts is not None and len(r.shared_experts) == 2
