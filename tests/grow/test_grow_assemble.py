"""Assembly from fine-tunes and bricks: identities, transformers parity, gates, validation before writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmbricks.errors import ConfigError, LmbricksError
from lmbricks.grow import GrowWarning, assemble, parse_moe_recipe, plan_assembly
from lmbricks.grow.hidden import domain_blocks, mean_router_inputs, prompt_router_inputs
from lmbricks.merge.lora import LoraAdapter
from lmbricks.nn import load_model

IDS = torch.randint(0, 384, (2, 24), generator=torch.Generator().manual_seed(0))
PROMPTS = [["The lady walked"], ["def f(x): return"], ["12 + 7 = 19"]]


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def _hf_matches(out: Path) -> torch.Tensor:
    moe, _ = load_model(out)
    ours = _logits(moe)
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    torch.testing.assert_close(_logits(hf), ours, atol=1e-5, rtol=0)
    return ours


def _experts(sources: list[Path], prompts: bool = True) -> list[dict]:
    return [
        {"source_model": str(s), **({"positive_prompts": PROMPTS[i]} if prompts else {})} for i, s in enumerate(sources)
    ]


@pytest.mark.parametrize("non_experts", ["base", "average"])
def test_identical_finetunes_assemble_to_the_base(
    tiny_llama: Path, base_copies: list[Path], tmp_path: Path, non_experts: str
) -> None:
    recipe = {
        "base_model": str(tiny_llama),
        "gate_mode": "random",
        "experts_per_token": 2,
        "non_experts": non_experts,
        "experts": _experts(base_copies, prompts=False),
    }
    with pytest.warns(GrowWarning, match="same content"):  # two copies, one content: warned, allowed
        out = assemble(parse_moe_recipe(recipe), tmp_path / "moe")
    base, _ = load_model(tiny_llama)
    torch.testing.assert_close(_hf_matches(out), _logits(base), atol=1e-5, rtol=0)


def test_btx_average_of_identical_finetunes_is_that_finetune(
    tiny_llama: Path, finetunes: list[Path], tmp_path: Path
) -> None:
    import shutil

    twin = tmp_path / "twin"
    shutil.copytree(finetunes[0], twin)
    recipe = {
        "base_model": str(tiny_llama),
        "gate_mode": "hidden",
        "non_experts": "average",
        "experts": _experts([finetunes[0], twin]),
    }
    with pytest.warns(GrowWarning, match="same content"):
        out = assemble(recipe, tmp_path / "moe")
    ft, _ = load_model(finetunes[0])
    torch.testing.assert_close(_hf_matches(out), _logits(ft), atol=1e-5, rtol=0)


def test_finetune_experts_hidden_gates_and_provenance(tiny_llama: Path, finetunes: list[Path], tmp_path: Path) -> None:
    recipe = {
        "base_model": str(tiny_llama),
        "gate_mode": "hidden",
        "experts_per_token": 2,
        "experts": [
            {"source_model": str(finetunes[0]), "positive_prompts": PROMPTS[0], "negative_prompts": PROMPTS[1]},
            {"source_model": str(finetunes[1]), "positive_prompts": PROMPTS[1]},
            {"source_model": str(finetunes[2]), "positive_prompts": PROMPTS[2], "residual_scale": 0.5},
        ],
    }
    out = assemble(recipe, tmp_path / "moe")
    _hf_matches(out)
    moe, _ = load_model(out)
    base, tok = load_model(tiny_llama)
    fts = [load_model(f)[0] for f in finetunes]
    for i in range(2):
        layer = moe.layers[i].ffn
        # expert e's FFN is fine-tune e's FFN (the third halved by residual_scale); attention is the base's
        torch.testing.assert_close(layer.experts.gate_up[1], fts[1].layers[i].ffn.gate_up.weight.t())
        torch.testing.assert_close(layer.experts.down[2], 0.5 * fts[2].layers[i].ffn.down.weight.t())
        torch.testing.assert_close(moe.layers[i].attn.qkv.weight, base.layers[i].attn.qkv.weight)
    # router rows: mergekit's "hidden", read at the router's input, positive minus negative, unit length
    pos = prompt_router_inputs(base, tok, PROMPTS[0])
    neg = prompt_router_inputs(base, tok, PROMPTS[1])
    row = (pos - neg) / (pos - neg).norm(dim=-1, keepdim=True)
    for i in range(2):
        torch.testing.assert_close(moe.layers[i].ffn.router.gate.weight[0], row[i], atol=1e-6, rtol=0)
    record = json.loads((out / "lmbricks.json").read_text())
    # Sources are recorded relative to the output directory (no machine paths).
    assert [(out / e["source"]).resolve() for e in record["bricks"]["experts"]] == [f.resolve() for f in finetunes]
    assert record["recipe"]["gate_mode"] == "hidden" and len(record["inputs"]) == 4


def test_brick_experts_domain_gates_and_shared_expert(
    tiny_llama: Path, bricks: list[Path], domains: list[str], tmp_path: Path
) -> None:
    recipe = {
        "base_model": str(tiny_llama),
        "gate_mode": "domain",
        "experts_per_token": 2,
        "domain_tokens": 512,
        "experts": [{"brick": str(b), "domain": d} for b, d in zip(bricks, domains, strict=True)],
        "shared_experts": [{"source_model": str(tiny_llama), "domain": domains[0]}],
    }
    out = assemble(recipe, tmp_path / "moe")
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2_moe"
    _hf_matches(out)
    moe, _ = load_model(out)
    base, tok = load_model(tiny_llama)
    lora = LoraAdapter(bricks[1])
    w = base.layers[1].ffn.down.weight + lora.delta("model.layers.1.mlp.down_proj.weight")
    torch.testing.assert_close(moe.layers[1].ffn.experts.down[1], w.t(), atol=1e-6, rtol=0)  # base FFN + brick
    # domain rows: mean router input over each domain's training text, centred, unit length
    from lmbricks.data import load_texts

    means = torch.stack([mean_router_inputs(base, domain_blocks(tok, load_texts(d, "train"), 512)) for d in domains])
    centred = means - means.mean(0)
    for i in range(2):
        want = centred[:, i] / centred[:, i].norm(dim=-1, keepdim=True)
        torch.testing.assert_close(moe.layers[i].ffn.router.gate.weight, want, atol=1e-5, rtol=0)
    bricks_json = json.loads((out / "lmbricks.json").read_text())["bricks"]
    assert [e["domain"] for e in bricks_json["experts"]] == domains and bricks_json["shared_expert"][
        "domain"
    ] == domains[0]
    assert (out / bricks_json["experts"][0]["brick"]).resolve() == bricks[0].resolve()


def test_cheap_embed_rows_are_the_same_in_every_layer(tiny_llama: Path, finetunes: list[Path], tmp_path: Path) -> None:
    recipe = {"base_model": str(tiny_llama), "gate_mode": "cheap_embed", "experts": _experts(finetunes[:2])}
    out = assemble(recipe, tmp_path / "moe")
    moe, _ = load_model(out)
    torch.testing.assert_close(moe.layers[0].ffn.router.gate.weight, moe.layers[1].ffn.router.gate.weight)


def test_nearly_collinear_rows_warn(tiny_llama: Path, finetunes: list[Path], tmp_path: Path) -> None:
    recipe = {
        "base_model": str(tiny_llama),
        "gate_mode": "cheap_embed",  # the same words in another order: the same summed embedding
        "experts": [
            {"source_model": str(finetunes[0]), "positive_prompts": ["lady garden walked"]},
            {"source_model": str(finetunes[1]), "positive_prompts": ["garden walked lady"]},
        ],
    }
    with pytest.warns(GrowWarning, match="nearly collinear"):
        assemble(recipe, tmp_path / "moe")


def _fails_before_writing(recipe: dict, tmp_path: Path, match: str, error: type[Exception] = LmbricksError) -> None:
    out = tmp_path / "out" / "moe"
    (tmp_path / "out").mkdir()
    with pytest.raises(error, match=match):
        assemble(recipe, out)
    assert list((tmp_path / "out").iterdir()) == []  # no output, no temporary directory


def test_mismatched_base_fails_before_writing(
    tiny_llama: Path, other_base: Path, finetunes: list[Path], tmp_path: Path
) -> None:
    recipe = {
        "base_model": str(tiny_llama),
        "gate_mode": "random",
        "experts": [{"source_model": str(finetunes[0])}, {"source_model": str(other_base)}],
    }
    _fails_before_writing(recipe, tmp_path, r"experts\[1\]\.source_model: .*hidden_size=48", ConfigError)


def test_brick_of_another_base_fails_before_writing(tiny_llama: Path, foreign_brick: Path, tmp_path: Path) -> None:
    recipe = {
        "base_model": str(tiny_llama),
        "gate_mode": "random",
        "experts_per_token": 1,
        "experts": [{"brick": str(foreign_brick)}],
    }
    _fails_before_writing(recipe, tmp_path, r"experts\[0\]\.brick: .*trained on", ConfigError)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {
                "gate_mode": "hidden",
                "experts": [{"source_model": "A"}, {"source_model": "B", "positive_prompts": ["x"]}],
            },
            r"experts\[0\]\.positive_prompts",
        ),
        ({"experts_per_token": 3}, "experts_per_token"),
        ({"gate_mode": "learned"}, "gate_mode"),
        (
            {
                "gate_mode": "domain",
                "experts": [
                    {"source_model": "A", "domain": "no_such_domain"},
                    {"source_model": "B", "domain": "no_such_domain"},
                ],
            },
            r"experts\[0\]\.domain",
        ),
    ],
)
def test_bad_recipes_fail_before_writing(
    tiny_llama: Path, finetunes: list[Path], tmp_path: Path, change: dict, match: str
) -> None:
    recipe = {
        "base_model": str(tiny_llama),
        "gate_mode": "random",
        "experts": [{"source_model": "A"}, {"source_model": "B"}],
    }
    recipe.update(change)
    for e in recipe["experts"]:
        e["source_model"] = str(finetunes[0] if e["source_model"] == "A" else finetunes[1])
    _fails_before_writing(recipe, tmp_path, match, ConfigError)


def test_dense_base_required_and_existing_output_refused(
    tiny_llama: Path, tiny_mixtral: Path, finetunes: list[Path], tmp_path: Path
) -> None:
    recipe = parse_moe_recipe(
        {"base_model": str(tiny_mixtral), "gate_mode": "random", "experts": _experts(finetunes[:2], False)}
    )
    with pytest.raises(ConfigError, match="base must be dense"):
        plan_assembly(recipe)
    (tmp_path / "taken").mkdir()
    ok = parse_moe_recipe(
        {"base_model": str(tiny_llama), "gate_mode": "random", "experts": _experts(finetunes[:2], False)}
    )
    with pytest.raises(ConfigError, match="already exists"):
        plan_assembly(ok, tmp_path / "taken")


def test_a_loaded_base_is_reused_and_never_aliased(tiny_llama: Path, finetunes: list[Path]) -> None:
    from lmbricks.grow import assemble_model

    base, tok = load_model(tiny_llama)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    for non_experts in ("base", "average"):
        recipe = {
            "base_model": str(tiny_llama),
            "gate_mode": "random",
            "non_experts": non_experts,
            "experts": _experts(finetunes[:2], prompts=False),
        }
        plan = plan_assembly(parse_moe_recipe(recipe))
        moe = assemble_model(plan, base=(base, tok)).model
        plan.close()
        with torch.no_grad():
            moe.embed.weight.add_(1.0)  # the MoE owns its tensors
            moe.layers[0].attn.qkv.weight.add_(1.0)
        for k, v in base.state_dict().items():
            torch.testing.assert_close(v, before[k], atol=0, rtol=0)
        assert moe.lm_head.weight is moe.embed.weight or not moe.cfg.tie_embeddings


def test_qwen3_moe_of_identical_experts_computes_the_dense_qwen3(
    qwen3_models: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    """Renormalised top-k gates sum to 1, so experts that are all the base FFN give the base's logits."""
    base, _tunes = qwen3_models
    experts = [{"source_model": str(base)}] * 3
    with pytest.warns(GrowWarning):  # identical contents
        assemble({"base_model": str(base), "gate_mode": "random", "experts": experts}, tmp_path / "moe")
    ids = torch.arange(1, 30).reshape(1, -1)
    with torch.no_grad():
        dense = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()(ids).logits
        moe_model = AutoModelForCausalLM.from_pretrained(tmp_path / "moe", dtype=torch.float32).eval()
        moe = moe_model(ids).logits
    assert moe_model.config.model_type == "qwen3_moe"
    torch.testing.assert_close(moe, dense, rtol=0, atol=1e-5)
    record = json.loads((tmp_path / "moe" / "lmbricks.json").read_text())
    assert record["bricks"]["family"] == "qwen3_moe" and record["bricks"]["routers"]["layers"] == [0, 1]


def test_qwen3_moe_average_non_experts_and_dtype(qwen3_models: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """non_experts: average writes the experts' mean attention; dtype is the storage dtype of every tensor."""
    from lmbricks.checkpoint import CheckpointReader

    base, tunes = qwen3_models
    recipe = {
        "base_model": str(base),
        "gate_mode": "hidden_avg",
        "non_experts": "average",
        "dtype": "bfloat16",
        "experts": [{"source_model": str(t), "positive_prompts": [f"p{i} text"]} for i, t in enumerate(tunes[:2])],
    }
    assemble(recipe, tmp_path / "moe")
    name = "model.layers.1.self_attn.q_norm.weight"
    with CheckpointReader(tmp_path / "moe") as out, CheckpointReader(tunes[0]) as a, CheckpointReader(tunes[1]) as b:
        assert {out.get(n).dtype for n in out} == {torch.bfloat16}
        mean = ((a.get(name) + b.get(name)) / 2).to(torch.bfloat16)
        assert torch.equal(out.get(name), mean)
        assert torch.equal(
            out.get("model.layers.0.mlp.experts.1.up_proj.weight"),
            b.get("model.layers.0.mlp.up_proj.weight").to(torch.bfloat16),
        )


def _qwen3_recipe(base: Path, experts: list[Path], **extra: object) -> dict:
    prompts = ["The lady walked", "def f(x): return", "12 + 7 = 19"]
    experts_list = [{"source_model": str(e), "positive_prompts": [p]} for e, p in zip(experts, prompts, strict=False)]
    return {"base_model": str(base), "gate_mode": "cheap_embed", "experts": experts_list, **extra}


def test_qwen3_moe_refusals(qwen3_models: tuple[Path, list[Path]], tiny_llama: Path, tmp_path: Path) -> None:
    base, tunes = qwen3_models
    shared = [{"source_model": str(base), "positive_prompts": ["x"]}]
    with pytest.raises(ConfigError, match="shared_experts: Qwen3-MoE has no shared expert"):
        assemble(_qwen3_recipe(base, tunes, shared_experts=shared), tmp_path / "a")
    with pytest.raises(ConfigError, match="needs a Qwen3 base_model"):
        assemble(_qwen3_recipe(tiny_llama, tunes, architecture="qwen3"), tmp_path / "b")
    with pytest.raises(ConfigError, match="experts\\[0\\].source_model.*model_type"):
        assemble(_qwen3_recipe(base, [tiny_llama, tunes[0]]), tmp_path / "c")
    with pytest.raises(ConfigError, match="remote code on the Hugging Face Hub"):
        assemble(_qwen3_recipe(tiny_llama, tunes, architecture="deepseek"), tmp_path / "d")
    assert not any(tmp_path.iterdir())
