"""Several shared experts, and DeepSeek-V3's group-limited router (``deepseek_as: glm4_moe``).

Every reference is built from transformers' own modules on the base Llama, with each shared expert a
separate ``LlamaMLP`` (so the side-by-side concatenation the writer does is what is tested): the
routed experts are transformers' ``MixtralSparseMoeBlock`` (softmax top-k, renormalised) or, for the
group-limited router, ``LlamaMLP`` experts behind the routing written out below from DeepSeek-V3's
description (sigmoid scores, groups scored by their two best experts, top-k inside the kept groups,
gates renormalised and times the scaling factor).
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

IDS = torch.tensor([[1, 7, 42, 99, 3, 250, 17, 64, 128, 11, 300, 5, 77, 201, 33, 140]])


def _ffn(path: Path, layer: int) -> dict[str, torch.Tensor]:
    with CheckpointReader(path) as r:
        return {p: r.get(f"model.layers.{layer}.mlp.{p}_proj.weight").float() for p in ("gate", "up", "down")}


def _mlp(cfg: Any, path: Path, layer: int) -> nn.Module:
    """transformers' LlamaMLP holding ``path``'s FFN of ``layer``."""
    from transformers.models.llama.modeling_llama import LlamaMLP

    mlp = LlamaMLP(cfg)
    with torch.no_grad():
        for p, w in _ffn(path, layer).items():
            getattr(mlp, f"{p}_proj").weight.copy_(w)
    return mlp


class _Block(nn.Module):
    """``scale * routed(x) + gate(x) * sum_s S_s(x)``, gate 1 (DeepSeek) or a sigmoid row (Qwen2-MoE)."""

    def __init__(self, routed: nn.Module, shared: list[nn.Module], scale: float, row: torch.Tensor | None) -> None:
        super().__init__()
        self.routed, self.shared, self.scale, self.row = routed, nn.ModuleList(shared), scale, row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = sum(m(x) for m in self.shared)
        gate = 1.0 if self.row is None else torch.sigmoid(x @ self.row.reshape(-1, 1))
        return self.scale * self.routed(x) + gate * s


class _GroupLimited(nn.Module):
    """DeepSeek-V3's routed experts: sigmoid scores, ``topk_group`` of ``n_group`` groups, top-k inside."""

    def __init__(self, w: torch.Tensor, experts: list[nn.Module], k: int, groups: tuple[int, int], scale: float):
        super().__init__()
        self.w, self.experts, self.k, self.groups, self.scale = w, nn.ModuleList(experts), k, groups, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(-1, x.shape[-1])  # (T, H)
        scores = torch.sigmoid(h @ self.w.T)  # (T, E)
        n_group, keep = self.groups
        per = scores.shape[1] // n_group
        group_score = scores.view(-1, n_group, per).topk(2, dim=-1).values.sum(-1)  # (T, G)
        kept = torch.zeros_like(group_score, dtype=torch.bool)
        kept.scatter_(1, group_score.topk(keep, dim=-1).indices, True)
        idx = scores.masked_fill(~kept.repeat_interleave(per, dim=1), float("-inf")).topk(self.k, dim=-1).indices
        gates = scores.gather(1, idx)
        gates = gates / gates.sum(-1, keepdim=True) * self.scale  # (T, k)
        out = torch.zeros_like(h)
        for t in range(h.shape[0]):
            for j in range(self.k):
                out[t] += gates[t, j] * self.experts[int(idx[t, j])](h[t])
        return out.reshape(x.shape)


def _reference(base: Path, build: Any) -> nn.Module:
    """The base Llama in transformers with every layer's FFN replaced by ``build(cfg, layer)``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    for i, layer in enumerate(model.model.layers):
        layer.mlp = build(model.config, i)
    return model.eval()


def _mixtral(cfg: Any, out: Path, tunes: list[Path], layer: int) -> nn.Module:
    """transformers' Mixtral block with the written router rows and ``tunes``' FFNs."""
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    mix = MixtralConfig(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                        num_local_experts=len(tunes), num_experts_per_tok=2, hidden_act=cfg.hidden_act)  # fmt: skip
    block = MixtralSparseMoeBlock(mix)
    experts = [_ffn(t, layer) for t in tunes]
    with CheckpointReader(out) as r, torch.no_grad():
        block.gate.weight.copy_(r.get(f"model.layers.{layer}.mlp.gate.weight").float())
        block.experts.gate_up_proj.copy_(torch.stack([torch.cat([e["gate"], e["up"]]) for e in experts]))
        block.experts.down_proj.copy_(torch.stack([e["down"] for e in experts]))
    return block


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def _loaded(out: Path) -> nn.Module:
    """The output through transformers, refusing any missing or unexpected tensor."""
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def test_deepseek_as_qwen2_moe_with_two_shared_experts(tiny_llama: Path, finetunes: list[Path], tmp_path: Path) -> None:
    recipe = {
        "base_model": str(tiny_llama), "architecture": "deepseek", "deepseek_as": "qwen2_moe", "gate_mode": "random",
        "experts": [{"source_model": str(t)} for t in finetunes[:2]], "seed": 4,
        "shared_experts": [{"source_model": str(finetunes[2])}, {"source_model": str(tiny_llama)}],
    }  # fmt: skip
    out = assemble(recipe, tmp_path / "moe")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "qwen2_moe" and cfg["shared_expert_intermediate_size"] == 2 * 64
    a, b = _ffn(finetunes[2], 0), _ffn(tiny_llama, 0)
    p = "model.layers.0.mlp.shared_expert"
    with CheckpointReader(out) as r:  # one shared expert of the summed width; gate 0, down doubled, exactly
        assert torch.equal(r.get(f"{p}.gate_proj.weight"), torch.cat([a["gate"], b["gate"]]))
        assert torch.equal(r.get(f"{p}.down_proj.weight"), 2 * torch.cat([a["down"], b["down"]], 1))
        assert not r.get(f"{p}_gate.weight").any()
    got = _logits(_loaded(out))

    def ref(shared: list[Path]) -> torch.Tensor:
        def block(c: Any, i: int) -> nn.Module:
            return _Block(_mixtral(c, out, finetunes[:2], i), [_mlp(c, s, i) for s in shared], 1.0, None)

        return _logits(_reference(tiny_llama, block))

    torch.testing.assert_close(got, ref([finetunes[2], tiny_llama]), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, ref([finetunes[2]]), atol=1e-4)  # the second shared expert is seen


def test_gated_qwen2_moe_with_two_shared_experts(tiny_llama: Path, finetunes: list[Path], tmp_path: Path) -> None:
    recipe = {
        "base_model": str(tiny_llama), "architecture": "qwen", "gate_mode": "random", "seed": 5,
        "experts": [{"source_model": str(t)} for t in finetunes[:2]],
        "shared_experts": [
            {"source_model": str(finetunes[2]), "residual_scale": 0.5}, {"source_model": str(tiny_llama)}
        ],
    }  # fmt: skip
    out = assemble(recipe, tmp_path / "moe")
    assert json.loads((out / "config.json").read_text())["shared_expert_intermediate_size"] == 2 * 64
    bricks = json.loads((out / "lmbricks.json").read_text())["bricks"]
    assert [Path(s["source"]).name for s in bricks["shared_experts"]] == ["ft2", tiny_llama.name]
    assert bricks["shared_expert"] == bricks["shared_experts"][0]
    with CheckpointReader(out) as r:
        rows = [r.get(f"model.layers.{i}.mlp.shared_expert_gate.weight").float() for i in range(2)]
    assert all(row.abs().sum() > 0 for row in rows)  # random mode draws the one gate's row

    def block(c: Any, i: int) -> nn.Module:
        half = _mlp(c, finetunes[2], i)
        with torch.no_grad():
            half.down_proj.weight.mul_(0.5)  # residual_scale
        return _Block(_mixtral(c, out, finetunes[:2], i), [half, _mlp(c, tiny_llama, i)], 1.0, rows[i])

    torch.testing.assert_close(_logits(_loaded(out)), _logits(_reference(tiny_llama, block)), rtol=1e-5, atol=1e-5)


def _glm4_recipe(base: Path, tunes: list[Path], **over: Any) -> dict[str, Any]:
    recipe = {
        "base_model": str(base), "architecture": "deepseek", "deepseek_as": "glm4_moe", "gate_mode": "random",
        "experts_per_token": 2, "n_group": 2, "topk_group": 1, "routed_scaling_factor": 2.5, "seed": 7,
        "experts": [{"source_model": str(t)} for t in [*tunes, base]],
        "shared_experts": [{"source_model": str(tunes[1])}, {"source_model": str(tunes[2])}],
    }  # fmt: skip
    return {**recipe, **over}


def test_glm4_moe_output_computes_the_group_limited_deepseek_moe(
    tiny_llama: Path, finetunes: list[Path], tmp_path: Path
) -> None:
    out = assemble(_glm4_recipe(tiny_llama, finetunes), tmp_path / "moe")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "glm4_moe" and (cfg["n_group"], cfg["topk_group"], cfg["n_shared_experts"]) == (2, 1, 2)
    assert cfg["first_k_dense_replace"] == 0 and cfg["routed_scaling_factor"] == 2.5 and not cfg["use_qk_norm"]
    tunes = [*finetunes, tiny_llama]
    with CheckpointReader(out) as r:
        w = [r.get(f"model.layers.{i}.mlp.gate.weight").float() for i in range(2)]
        shared = r.get("model.layers.1.mlp.shared_experts.down_proj.weight")
    assert torch.equal(shared, torch.cat([_ffn(finetunes[1], 1)["down"], _ffn(finetunes[2], 1)["down"]], 1))
    got = _logits(_loaded(out))

    def ref(groups: tuple[int, int]) -> torch.Tensor:
        def block(c: Any, i: int) -> nn.Module:
            routed = _GroupLimited(w[i], [_mlp(c, t, i) for t in tunes], 2, groups, 2.5)
            return _Block(routed, [_mlp(c, finetunes[1], i), _mlp(c, finetunes[2], i)], 1.0, None)

        return _logits(_reference(tiny_llama, block))

    torch.testing.assert_close(got, ref((2, 1)), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, ref((2, 2)), atol=1e-4)  # limiting each token to one group is seen


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"deepseek_as": "qwen2_moe", "routed_scaling_factor": 2.0}, "n_group: Qwen2-MoE routes over all experts"),
        ({"scoring_func": "softmax"}, "scoring_func: 'softmax' with deepseek_as: glm4_moe"),
        ({"n_group": 3}, "n_group: 3 groups do not divide the 4 experts"),
        ({"n_group": 4}, "n_group: 4 groups of 1 expert"),
        ({"topk_group": 3}, "topk_group: 3 is more than the 2 group"),
        ({"experts_per_token": 3}, "topk_group: 1 group\\(s\\) of 2 experts hold fewer than experts_per_token \\(3\\)"),
        ({"shared_experts": None}, "shared_experts: the DeepSeek layout has a shared expert"),
        (
            {"architecture": "qwen", "deepseek_as": None, "routed_scaling_factor": None},
            "n_group: only with architecture",
        ),
    ],
)
def test_glm4_moe_refusals_name_the_field(
    tiny_llama: Path, finetunes: list[Path], tmp_path: Path, over: dict[str, Any], field: str
) -> None:
    recipe = {k: v for k, v in _glm4_recipe(tiny_llama, finetunes, **over).items() if v is not None}
    with pytest.raises(ConfigError, match=field):
        assemble(recipe, tmp_path / "moe")
    assert not any(tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore:every expert has the same content")
def test_glm4_moe_refuses_shared_prompts_and_sliding_windows(
    tiny_llama: Path, finetunes: list[Path], tmp_path: Path
) -> None:
    from lmbricks.testing import save_tiny_model, tiny_llama_config

    recipe = _glm4_recipe(tiny_llama, finetunes)
    recipe["shared_experts"][1]["positive_prompts"] = ["x"]
    with pytest.raises(ConfigError, match="shared_experts\\[1\\].positive_prompts: DeepSeek's shared expert is"):
        assemble(recipe, tmp_path / "moe")
    from transformers import MistralConfig

    trunk = tiny_llama_config().to_dict()
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    mistral = save_tiny_model(tmp_path / "mistral", MistralConfig(**{k: trunk[k] for k in keep}, sliding_window=8))
    from lmbricks.grow import parse_moe_recipe, plan_assembly

    for run in (assemble, lambda r, out: plan_assembly(parse_moe_recipe(r), out)):  # --validate refuses it too
        with pytest.raises(ConfigError, match="base_model: its attention is sliding-window \\(8 tokens\\)"):
            run(_glm4_recipe(mistral, [mistral] * 3), tmp_path / "moe")
    assert not (tmp_path / "moe").exists()


@pytest.mark.filterwarnings("ignore:every expert has the same content")
def test_glm4_moe_of_a_qwen2_base_with_base_experts_is_the_dense_model(tmp_path: Path) -> None:
    """Every expert the base FFN F: gates renormalised times 1/2 give F/2, two shared experts at 1/4
    each give F/2, so the output is the dense Qwen2 (q/k/v biases, rope) within fp32 rounding."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from lmbricks.testing import _TINY_TRUNK, save_tiny_model

    base = save_tiny_model(tmp_path / "qwen2", Qwen2Config(**_TINY_TRUNK), seed=9)
    with torch.no_grad():  # random init leaves the biases at zero: make them matter
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        for name, p in model.named_parameters():
            if name.endswith("_proj.bias"):
                p.add_(torch.randn(p.shape) * 0.5)
        model.save_pretrained(base)
    shared = [{"source_model": str(base), "residual_scale": 0.25}] * 2
    recipe = _glm4_recipe(base, [base] * 3, routed_scaling_factor=0.5, shared_experts=shared)
    out = assemble(recipe, tmp_path / "moe")
    assert json.loads((out / "config.json").read_text())["attention_bias"] is True
    torch.testing.assert_close(_logits(_loaded(out)), _logits(model.eval()), rtol=1e-5, atol=1e-5)
