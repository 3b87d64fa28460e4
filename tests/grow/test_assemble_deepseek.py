"""``architecture: deepseek`` with ``deepseek_as: qwen2_moe``: DeepSeek-MoE's layout written exactly as Qwen2-MoE.

The reference is the DeepSeek-MoE block built from transformers' own modules on the base Llama:
``MixtralSparseMoeBlock`` (softmax top-k, renormalised gates) for the routed experts plus a
``LlamaMLP`` shared expert added with weight 1, no gate, i.e. ``y = sum_k g_k E_k(x) + S(x)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from lmbricks.checkpoint import CheckpointReader
from lmbricks.errors import ConfigError
from lmbricks.grow import assemble


def _recipe(base: Path, tunes: list[Path], **over: Any) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "base_model": str(base),
        "architecture": "deepseek",
        "deepseek_as": "qwen2_moe",
        "gate_mode": "random",
        "experts_per_token": 2,
        "experts": [{"source_model": str(t)} for t in tunes[:2]],
        "shared_experts": [{"source_model": str(tunes[2])}],
        "seed": 3,
    }
    return {**recipe, **over}


class _DeepSeekMoE(nn.Module):
    """Routed experts (transformers' Mixtral block) times ``routed_scaling_factor`` plus an ungated
    shared expert (a Llama MLP)."""

    def __init__(self, routed: nn.Module, shared: nn.Module, scale: float) -> None:
        super().__init__()
        self.routed, self.shared, self.scale = routed, shared, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.routed(x) + self.shared(x)


def _ffn(path: Path, layer: int) -> dict[str, torch.Tensor]:
    with CheckpointReader(path) as r:
        return {p: r.get(f"model.layers.{layer}.mlp.{p}_proj.weight").float() for p in ("gate", "up", "down")}


def _source_moe(base: Path, tunes: list[Path], out: Path, scale: float) -> nn.Module:
    """The DeepSeek-MoE the recipe describes: the base Llama with each FFN replaced by the block above."""
    from transformers import AutoModelForCausalLM, MixtralConfig
    from transformers.models.llama.modeling_llama import LlamaMLP
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = model.config
    mix = MixtralConfig(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                        num_local_experts=2, num_experts_per_tok=2, hidden_act=cfg.hidden_act)  # fmt: skip
    with CheckpointReader(out) as r, torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            routed, shared = MixtralSparseMoeBlock(mix), LlamaMLP(cfg)
            routed.gate.weight.copy_(r.get(f"model.layers.{i}.mlp.gate.weight").float())  # the router rows as written
            experts = [_ffn(t, i) for t in tunes[:2]]
            routed.experts.gate_up_proj.copy_(torch.stack([torch.cat([e["gate"], e["up"]]) for e in experts]))
            routed.experts.down_proj.copy_(torch.stack([e["down"] for e in experts]))
            for p, w in _ffn(tunes[2], i).items():
                getattr(shared, f"{p}_proj").weight.copy_(w)
            layer.mlp = _DeepSeekMoE(routed, shared, scale)
    return model.eval()


@pytest.mark.parametrize("scale", [None, 2.0])
def test_deepseek_layout_as_qwen2_moe_computes_the_deepseek_moe(
    tiny_llama: Path, finetunes: list[Path], tmp_path: Path, scale: float | None
) -> None:
    from transformers import AutoModelForCausalLM

    out = assemble(_recipe(tiny_llama, finetunes, routed_scaling_factor=scale), tmp_path / "moe")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "qwen2_moe" and cfg["norm_topk_prob"] is True
    shared = _ffn(finetunes[2], 1)
    with CheckpointReader(out) as r:  # the gate is exactly sigmoid(0) = 1/2 and S's output doubled, bit for bit
        assert not r.get("model.layers.1.mlp.shared_expert_gate.weight").any()
        assert torch.equal(r.get("model.layers.1.mlp.shared_expert.down_proj.weight").float(), 2 * shared["down"])
        assert torch.equal(r.get("model.layers.1.mlp.shared_expert.up_proj.weight").float(), shared["up"])
        routed = _ffn(finetunes[1], 1)["down"] * (scale or 1.0)  # r folded into the routed experts, exactly
        assert torch.equal(r.get("model.layers.1.mlp.experts.1.down_proj.weight").float(), routed)
    moe = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ref = _source_moe(tiny_llama, finetunes, out, scale or 1.0)
    ids = torch.tensor([[1, 7, 42, 99, 3, 250, 17, 64, 128, 11, 300, 5]])
    with torch.no_grad():
        got, want = moe(ids).logits, ref(ids).logits
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        # a gated (halved) shared expert is measurably different: the test sees the shared expert
        for layer in ref.model.layers:
            layer.mlp.shared.down_proj.weight.mul_(0.5)
        assert not torch.allclose(got, ref(ids).logits, atol=1e-4)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"deepseek_as": None}, "remote code on the Hugging Face Hub"),
        ({"architecture": "qwen"}, "deepseek_as: only with architecture: deepseek"),
        ({"shared_experts": None}, "shared_experts: the DeepSeek layout has a shared expert"),
        ({"gate_mode": "cheap_embed"}, "shared_experts\\[0\\].positive_prompts: DeepSeek's shared expert is ungated"),
        ({"gate_mode": "domain"}, "shared_experts\\[0\\].domain: DeepSeek's shared expert is ungated"),
        ({"scoring_func": "sigmoid"}, "scoring_func: 'sigmoid' \\(DeepSeek-V3\\)"),
        ({"routed_scaling_factor": 2.5}, "routed_scaling_factor: 2.5 is not a power of two"),
        ({"architecture": "qwen", "deepseek_as": None, "routed_scaling_factor": 2.0}, "routed_scaling_factor: only"),
    ],
)
def test_deepseek_refusals_name_the_field(
    tiny_llama: Path, finetunes: list[Path], tmp_path: Path, over: dict[str, Any], field: str
) -> None:
    recipe = _recipe(tiny_llama, finetunes, **over)
    if over.get("gate_mode") == "cheap_embed":
        recipe["experts"] = [{**e, "positive_prompts": [f"p{i}"]} for i, e in enumerate(recipe["experts"])]
        recipe["shared_experts"] = [{**recipe["shared_experts"][0], "positive_prompts": ["shared"]}]
    if over.get("gate_mode") == "domain":
        recipe["experts"] = [{**e, "domain": "en_prose"} for e in recipe["experts"]]
        recipe["shared_experts"] = [{**recipe["shared_experts"][0], "domain": "code"}]
    with pytest.raises(ConfigError, match=field):
        assemble({k: v for k, v in recipe.items() if v is not None}, tmp_path / "moe")
    assert not any(tmp_path.iterdir())


def test_deepseek_over_a_qwen3_base_is_refused(qwen3_models: tuple[Path, list[Path]], tmp_path: Path) -> None:
    base, tunes = qwen3_models
    with pytest.raises(ConfigError, match="architecture: 'deepseek' cannot hold a Qwen3 base"):
        assemble(_recipe(base, [*tunes, tunes[0]][:3]), tmp_path / "moe")


MERGEKIT_MOE = Path(__file__).resolve().parents[2] / ".bench-venvs" / "mergekit" / "bin" / "mergekit-moe"


@pytest.mark.skipif(not MERGEKIT_MOE.exists(), reason=f"mergekit venv absent ({MERGEKIT_MOE})")
def test_deepseek_layout_matches_mergekit_moe_deepseek_output(
    tiny_llama: Path, finetunes: list[Path], tmp_path: Path
) -> None:
    """mergekit-moe's DeepSeek output (remote-code model type, read here tensor by tensor) holds the same
    experts, router rows (``cheap_embed``) and non-expert weights; its ungated shared expert is ours
    with the down projection halved, bit for bit."""
    import subprocess

    import yaml

    prompts = [{"positive_prompts": ["The lady walked"]}, {"positive_prompts": ["def f(x): return"]}]
    recipe = _recipe(tiny_llama, finetunes, gate_mode="cheap_embed", dtype="float32")
    recipe["experts"] = [{**e, **p} for e, p in zip(recipe["experts"], prompts, strict=True)]
    # the base as shared expert: mergekit 0.1.5's DeepSeek writer opens no loader for a shared expert
    # that is neither the base nor a routed expert (AttributeError: 'NoneType' ... 'get_tensor')
    recipe["shared_experts"] = [{"source_model": str(tiny_llama)}]
    mk_recipe = {k: v for k, v in recipe.items() if k not in ("deepseek_as", "seed")}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(mk_recipe))
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    cmd = [str(MERGEKIT_MOE), str(tmp_path / "recipe.yaml"), str(tmp_path / "mk")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    mk_cfg = json.loads((tmp_path / "mk" / "config.json").read_text())
    assert mk_cfg["model_type"] == "deepseek" and mk_cfg["n_shared_experts"] == 1 and mk_cfg["norm_topk_prob"]
    out = assemble(recipe, tmp_path / "lb")
    with CheckpointReader(out) as lb, CheckpointReader(tmp_path / "mk") as mk:
        shared = {k for k in mk if ".shared_experts." in k}
        assert len(shared) == 3 * 2  # gate, up, down per layer
        for k in mk:
            if k in shared:
                ours = lb.get(k.replace(".shared_experts.", ".shared_expert."))
                want = mk.get(k) * (2 if "down_proj" in k else 1)
                assert torch.equal(ours, want), k
            else:
                assert torch.equal(lb.get(k), mk.get(k)), k
        assert set(lb) - set(mk) == {k.replace(".shared_experts.", ".shared_expert.") for k in shared} | {
            f"model.layers.{i}.mlp.shared_expert_gate.weight" for i in range(2)
        }
