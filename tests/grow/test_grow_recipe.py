"""Assembly recipes: mergekit-moe's YAML as users write it, and every rule failing with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbricks.errors import ConfigError
from lmbricks.grow import load_moe_recipe, parse_moe_recipe

MERGEKIT_MOE_YAML = """\
base_model: mistralai/Mistral-7B-Instruct-v0.2
gate_mode: hidden # one of "hidden", "cheap_embed", or "random"
dtype: bfloat16 # output dtype (float32, float16, or bfloat16)
experts_per_token: 2
experts:
  - source_model: teknium/OpenHermes-2.5-Mistral-7B
    positive_prompts:
      - "chat assistant"
    negative_prompts:
      - "math"
  - source_model: meta-math/MetaMath-Mistral-7B
    positive_prompts:
      - "solve the equation"
    noise_scale: 0.01
    residual_scale: 0.5
shared_experts:
  - source_model: mistralai/Mistral-7B-Instruct-v0.2
    positive_prompts: ["chat assistant"]
architecture: qwen
"""


def _recipe(**over: object) -> dict:
    base = {
        "base_model": "b",
        "gate_mode": "hidden",
        "experts_per_token": 1,
        "experts": [
            {"source_model": "m1", "positive_prompts": ["code"]},
            {"source_model": "m2", "positive_prompts": ["maths"]},
        ],
    }
    base.update(over)
    return base


def test_mergekit_moe_yaml_parses(tmp_path: Path) -> None:
    path = tmp_path / "moe.yaml"
    path.write_text(MERGEKIT_MOE_YAML)
    r = load_moe_recipe(path)
    assert r.gate_mode == "hidden" and r.dtype == "bfloat16" and r.experts_per_token == 2
    assert r.experts[1].noise_scale == 0.01 and r.experts[1].residual_scale == 0.5
    assert r.shared_experts is not None and r.output_family == "qwen2_moe"
    assert r.non_experts == "base"  # mergekit's behaviour unless the lmbricks extension asks otherwise


def test_lmbricks_extensions_parse() -> None:
    r = parse_moe_recipe(
        {
            "base_model": "smollm2-135m-instruct",
            "gate_mode": "domain",
            "experts_per_token": 1,
            "non_experts": "average",
            "experts": [{"brick": "zh", "domain": "zh"}, {"source_model": "a+lora", "domain": "code"}],
        }
    )
    assert [e.label() for e in r.experts] == ["zh", "a+lora"] and r.output_family == "mixtral"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"gate_mode": "hiden"}, "gate_mode"),
        ({"experts_per_token": 3}, "experts_per_token"),
        (
            {"experts": [{"source_model": "m1", "positive_prompts": ["x"]}, {"source_model": "m2"}]},
            "experts[1].positive_prompts",
        ),
        (
            {"experts": [{"source_modle": "m1"}]},
            "unknown key 'experts[0].source_modle' (did you mean 'experts[0].source_model'?)",
        ),
        (
            {"experts": [{"source_model": "m1", "noise_scale": float("nan")}]},
            "experts[0].noise_scale: must be a finite number, got .nan",
        ),
        ({"experts": [{"source_model": "m", "brick": "b", "positive_prompts": ["x"]}]}, "experts[0]"),
        ({"experts": [{"positive_prompts": ["x"]}]}, "experts[0]"),
        ({"gate_mode": "domain"}, "experts[0].domain"),
        ({"dtype": "float8"}, "dtype"),
        ({"architecture": "deepseek"}, "architecture"),
        ({"architecture": "qwen"}, "architecture"),
        (
            {"shared_experts": [{"source_model": "a"}, {"source_model": "b", "positive_prompts": ["x"]}]},
            "shared_experts[1].positive_prompts: 2 shared experts are written as one",
        ),
        ({"experts": [{"brick": "a+b", "positive_prompts": ["x"]}]}, "experts[0].brick"),
        ({"domain_tokens": 0}, "domain_tokens"),
        ({"experts": [{"source_model": "m", "positive_prompts": ["x", " "]}]}, "positive_prompts[1]: an empty"),
    ],
)
def test_bad_recipe_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_moe_recipe(_recipe(**change), "r.yaml")
    assert field in str(info.value) and str(info.value).startswith("r.yaml")


def test_identical_prompts_for_every_expert_refused() -> None:
    experts = [{"source_model": f"m{i}", "positive_prompts": ["same"]} for i in range(2)]
    with pytest.raises(ConfigError, match="same prompts"):
        parse_moe_recipe(_recipe(experts=experts))


def test_random_gates_need_no_prompts_and_bad_yaml_is_an_error(tmp_path: Path) -> None:
    r = parse_moe_recipe(_recipe(gate_mode="random", experts=[{"source_model": "a"}, {"source_model": "b"}]))
    assert r.gate_mode == "random"
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_moe_recipe(bad)
    with pytest.raises(ConfigError, match="missing.yaml: no such file"):
        load_moe_recipe(tmp_path / "missing.yaml")
