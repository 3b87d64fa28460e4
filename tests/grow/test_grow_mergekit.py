"""``lmbricks moe assemble`` agrees with ``mergekit-moe`` (0.1.5) on the same recipe, tiny fp32 models.

Both outputs are loaded by transformers (which reads mergekit's per-expert Mixtral names and lmbricks'
fused expert tensors into the same parameters) and compared parameter by parameter: experts, attention,
embeddings and norms exactly, and the router rows exactly for ``cheap_embed``. ``hidden`` rows differ on
purpose (docs/grow.md: lmbricks reads the router's input ``post_attention_layernorm(x)``, one prompt at
a time after BOS; mergekit the residual stream before the layer, right-padded batches): asserted different.
``random`` rows come from different generators, so everything but the router is compared.
Qwen3-MoE (a tiny Qwen3 base and fine-tunes of it, mergekit's ``qwen3`` architecture) is compared the
same way; mergekit's ``deepseek`` output has no transformers model type (lmbricks writes its layout as
Qwen2-MoE with ``deepseek_as``, compared in tests/grow/test_assemble_deepseek.py).
Needs mergekit in its own virtual environment (``.bench-venvs/mergekit``); skipped otherwise.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from lmbricks.grow import assemble

ROOT = Path(__file__).resolve().parents[2]
MERGEKIT_MOE = ROOT / ".bench-venvs" / "mergekit" / "bin" / "mergekit-moe"
PROMPTS = [["The lady walked"], ["def f(x): return"], ["12 + 7 = 19"]]

pytestmark = pytest.mark.skipif(
    not MERGEKIT_MOE.exists(), reason=f"mergekit venv absent ({MERGEKIT_MOE}); create it with `make mergekit-venv`"
)


def _both(recipe: dict, tmp: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [str(MERGEKIT_MOE), str(tmp / "recipe.yaml"), str(tmp / "mk")], check=True, capture_output=True, env=env
    )
    assemble(recipe, tmp / "lb")
    out = []
    for name in ("lb", "mk"):
        model = AutoModelForCausalLM.from_pretrained(tmp / name, dtype=torch.float32).eval()
        with torch.no_grad():
            assert torch.isfinite(model(torch.arange(1, 20).reshape(1, -1)).logits).all()
        out.append(model.state_dict())
    return out[0], out[1]


def _recipe(base: Path, experts: list[Path], gate_mode: str, prompts: list[list[str]], **extra: object) -> dict:
    return {
        "base_model": str(base),
        "gate_mode": gate_mode,
        "dtype": "float32",
        "experts_per_token": 2,
        "experts": [{"source_model": str(e), "positive_prompts": p} for e, p in zip(experts, prompts, strict=False)],
        **extra,
    }


def _compare(lb: dict[str, torch.Tensor], mk: dict[str, torch.Tensor], gates: bool) -> None:
    assert set(lb) == set(mk)
    for key, tensor in lb.items():
        if ".gate.weight" in key and "experts" not in key and not gates:
            continue
        torch.testing.assert_close(tensor, mk[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("gate_mode", ["cheap_embed", "hidden", "random"])
def test_mixtral_matches_mergekit_moe(tiny_llama: Path, finetunes: list[Path], tmp_path: Path, gate_mode: str) -> None:
    lb, mk = _both(_recipe(tiny_llama, finetunes, gate_mode, PROMPTS), tmp_path)
    assert any("experts" in k for k in lb)
    _compare(lb, mk, gates=gate_mode == "cheap_embed")
    if gate_mode == "hidden":  # documented difference: lmbricks reads the router's input, mergekit the residual
        gates = [k for k in lb if k.endswith("mlp.gate.weight")]
        assert gates and all(float((lb[k] - mk[k]).abs().max()) > 1e-3 for k in gates)


def test_qwen2_moe_with_shared_expert_matches_mergekit_moe(
    tiny_llama: Path, finetunes: list[Path], tmp_path: Path
) -> None:
    shared = [{"source_model": str(tiny_llama), "positive_prompts": ["The lady walked"]}]
    recipe = _recipe(tiny_llama, finetunes[:2], "cheap_embed", PROMPTS, shared_experts=shared, architecture="qwen")
    lb, mk = _both(recipe, tmp_path)
    assert any("shared_expert" in k for k in lb)
    # mergekit's Qwen2-MoE keeps Qwen2's q/k/v biases (zeros from a Llama base); lmbricks writes none
    extra = {k for k in set(mk) - set(lb) if k.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias"))}
    assert extra and all(float(mk.pop(k).abs().max()) == 0.0 for k in extra)
    _compare(lb, mk, gates=True)


@pytest.mark.parametrize("gate_mode", ["cheap_embed", "hidden"])
def test_qwen3_moe_matches_mergekit_moe(qwen3_models: tuple[Path, list[Path]], tmp_path: Path, gate_mode: str) -> None:
    base, tunes = qwen3_models
    lb, mk = _both(_recipe(base, tunes, gate_mode, PROMPTS, architecture="qwen3"), tmp_path)
    cfg = AutoModelForCausalLM.from_pretrained(tmp_path / "lb").config
    assert cfg.model_type == "qwen3_moe" and cfg.num_experts == 3 and cfg.norm_topk_prob
    assert any("q_norm" in k for k in lb) and any(".experts." in k for k in lb)
    _compare(lb, mk, gates=gate_mode == "cheap_embed")
    if gate_mode == "hidden":  # the same documented difference as Mixtral's
        gates = [k for k in lb if k.endswith("mlp.gate.weight")]
        assert gates and all(float((lb[k] - mk[k]).abs().max()) > 1e-3 for k in gates)
