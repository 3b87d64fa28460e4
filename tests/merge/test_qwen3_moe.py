"""Merging two Qwen3-MoE checkpoints: every method, tensor by tensor (each expert, the router as a linear).

The models are built with transformers' ``Qwen3MoeConfig`` (per-head q/k norms, routed experts, a
dense layer through ``mlp_only_layers``, untied head) and saved as ``save_pretrained`` writes them:
one tensor per expert, so a merge combines expert e of one model with expert e of the other.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from lmbricks.checkpoint import CheckpointReader, tensor_role
from lmbricks.merge import all_methods, get_method, merge
from lmbricks.testing import save_tiny_model

HEAD_DIM = 16


def _config() -> Any:
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
        vocab_size=384,
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=HEAD_DIM,
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        mlp_only_layers=[1],
        tie_word_embeddings=False,
        max_position_embeddings=256,
    )


@pytest.fixture(scope="module")
def qwen3_moe_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"a", "b", "c"}``: a random tiny fp32 Qwen3-MoE and two fine-tunes of it (Gaussian noise 0.02);
    ``a2``, ``a3``: byte copies of ``a`` (a base-using method takes the base apart from its terms)."""
    root = tmp_path_factory.mktemp("qwen3_moe")
    a = save_tiny_model(root / "a", _config(), seed=3)
    out = {k: save_tiny_model(root / k, _config(), seed=s, perturb_from=a, noise=0.02) for k, s in (("b", 4), ("c", 5))}
    out["a"] = a
    for copy in ("a2", "a3"):
        out[copy] = Path(shutil.copytree(a, root / copy))
    return out


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with CheckpointReader(path) as r:
        return {k: r.get(k) for k in r}


def _self_recipe(name: str, pair: dict[str, Path]) -> dict[str, Any]:
    """A recipe of ``name`` whose every input is model ``a`` (the base ``a``, the terms its copies)."""
    m = get_method(name)
    n = 1 if m.max_models == 1 else 2
    refs = [str(pair[k]) for k in (("a2", "a3") if m.base != "none" else ("a", "a2"))][:n]
    per_input: dict[str, Any] = {}
    if m.param("weight") is not None:
        per_input["weight"] = 1.0
    shared: dict[str, Any] = {"t": 0.5} if m.param("t") is not None else {}
    recipe: dict[str, Any] = {
        "merge_method": name,
        "models": [{"model": r, "parameters": dict(per_input)} for r in refs],
        "parameters": shared,
    }
    if m.base != "none":
        recipe["base_model"] = str(pair["a"])
    return recipe


@pytest.mark.parametrize("name", [m.name for m in all_methods()])
def test_merging_a_qwen3_moe_with_itself_returns_it_bit_for_bit(
    qwen3_moe_pair: dict[str, Path], tmp_path: Path, name: str
) -> None:
    out = merge(_self_recipe(name, qwen3_moe_pair), tmp_path / "out")
    want, got = _tensors(qwen3_moe_pair["a"]), _tensors(out)
    assert got.keys() == want.keys()
    assert any(".mlp.experts.3." in k for k in got) and any(k.endswith(".mlp.gate.weight") for k in got)
    for k, v in want.items():
        assert torch.equal(got[k], v), k


def test_linear_with_weights_one_and_zero_returns_the_first(qwen3_moe_pair: dict[str, Path], tmp_path: Path) -> None:
    a, b = qwen3_moe_pair["a"], qwen3_moe_pair["b"]
    recipe = {"merge_method": "linear", "models": [{"model": str(b), "parameters": {"weight": 1.0}},
                                                   {"model": str(a), "parameters": {"weight": 0.0}}]}  # fmt: skip
    got, want, other = _tensors(merge(recipe, tmp_path / "out")), _tensors(b), _tensors(a)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(got[k], v), k
    assert not torch.equal(
        want["model.layers.0.mlp.experts.2.up_proj.weight"], other["model.layers.0.mlp.experts.2.up_proj.weight"]
    )


@pytest.mark.parametrize("name", ["ties", "karcher", "nuslerp"])
def test_each_expert_and_the_router_are_merged_as_their_own_tensor(
    qwen3_moe_pair: dict[str, Path], tmp_path: Path, name: str
) -> None:
    """Output expert e = method(expert e of each input); the router (E, H) is merged as a linear layer."""
    a, b, c = (_tensors(qwen3_moe_pair[k]) for k in "abc")
    m = get_method(name)
    recipe: dict[str, Any] = {"merge_method": name, "models": [
        {"model": str(qwen3_moe_pair[k]), "parameters": {"weight": w} if m.param("weight") else {}}
        for k, w in (("b", 0.7), ("c", 0.3))]}  # fmt: skip
    kwargs: dict[str, Any] = {"weight": [0.7, 0.3]} if m.param("weight") else {}
    if name == "ties":
        recipe["base_model"] = str(qwen3_moe_pair["a"])
        recipe["parameters"] = {"density": 0.5}
    got = _tensors(merge(recipe, tmp_path / "out"))
    params = {p.kwarg: p.default for p in m.params if not p.required}
    params.update({p.kwarg: [p.default] * 2 for p in m.params if p.per_input and not p.required})
    params.update(kwargs, **({"density": [0.5, 0.5]} if name == "ties" else {}))
    roles = {tensor_role("qwen3_moe", k).kind for k in got}
    assert {"router", "ffn", "attention", "norm", "embedding", "head"} <= roles
    for k, v in got.items():
        base = a[k] if "base_model" in recipe else None
        want = m.fn(base, [b[k], c[k]], **params)
        torch.testing.assert_close(v, want.to(v.dtype), rtol=1e-6, atol=1e-6, msg=lambda s, k=k: f"{k}: {s}")
    # experts differ from one another, so merging expert e with expert e' would fail the loop above
    e0, e1 = (got[f"model.layers.2.mlp.experts.{e}.gate_proj.weight"] for e in (0, 1))
    assert not torch.allclose(e0, e1, atol=1e-3)


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half RoPE on (heads, T, head_dim)."""
    T, d = x.shape[1], x.shape[2]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = torch.outer(torch.arange(T, dtype=torch.float32), inv)  # (T, d/2)
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    half = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * cos + half * sin


def _ffn(sd: dict[str, torch.Tensor], p: str, h: torch.Tensor) -> torch.Tensor:
    act = torch.nn.functional.silu(h @ sd[f"{p}.gate_proj.weight"].T) * (h @ sd[f"{p}.up_proj.weight"].T)
    return act @ sd[f"{p}.down_proj.weight"].T


def _hand_logits(sd: dict[str, torch.Tensor], cfg: dict[str, Any], ids: torch.Tensor) -> torch.Tensor:
    """Qwen3-MoE's forward written out from the state dict: (T,) token ids -> (T, V) logits."""
    eps, nh, nkv = cfg["rms_norm_eps"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    theta, k_top = cfg["rope_parameters"]["rope_theta"], cfg["num_experts_per_tok"]
    x = sd["model.embed_tokens.weight"][ids]  # (T, H)
    T = x.shape[0]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        h = _rms(x, sd[f"{p}.input_layernorm.weight"], eps)
        q, k, v = (h @ sd[f"{p}.self_attn.{n}_proj.weight"].T for n in "qkv")
        q = _rms(q.view(T, nh, HEAD_DIM), sd[f"{p}.self_attn.q_norm.weight"], eps).transpose(0, 1)
        k = _rms(k.view(T, nkv, HEAD_DIM), sd[f"{p}.self_attn.k_norm.weight"], eps).transpose(0, 1)
        v = v.view(T, nkv, HEAD_DIM).transpose(0, 1)
        q, k = _rope(q, theta), _rope(k, theta).repeat_interleave(nh // nkv, 0)
        att = torch.softmax(q @ k.transpose(1, 2) / HEAD_DIM**0.5 + mask, -1) @ v.repeat_interleave(nh // nkv, 0)
        x = x + att.transpose(0, 1).reshape(T, nh * HEAD_DIM) @ sd[f"{p}.self_attn.o_proj.weight"].T
        h = _rms(x, sd[f"{p}.post_attention_layernorm.weight"], eps)
        if f"{p}.mlp.gate.weight" not in sd:  # a dense layer (mlp_only_layers)
            x = x + _ffn(sd, f"{p}.mlp", h)
            continue
        probs = torch.softmax(h @ sd[f"{p}.mlp.gate.weight"].T, -1)  # (T, E)
        top, idx = probs.topk(k_top, -1)
        top = top / top.sum(-1, keepdim=True)  # norm_topk_prob
        out = torch.zeros_like(x)
        for t in range(T):
            for j in range(k_top):
                out[t] += top[t, j] * _ffn(sd, f"{p}.mlp.experts.{int(idx[t, j])}", h[t : t + 1])[0]
        x = x + out
    return _rms(x, sd["model.norm.weight"], eps) @ sd["lm_head.weight"].T


def test_merged_qwen3_moe_loads_and_its_logits_equal_a_forward_by_hand(
    qwen3_moe_pair: dict[str, Path], tmp_path: Path
) -> None:
    import json

    from transformers import AutoModelForCausalLM

    recipe = {"merge_method": "ties", "base_model": str(qwen3_moe_pair["a"]), "parameters": {"density": 0.6},
              "models": [{"model": str(qwen3_moe_pair[k]), "parameters": {"weight": 0.5}} for k in "bc"]}  # fmt: skip
    out = merge(recipe, tmp_path / "out")
    sd, cfg = _tensors(out), json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "qwen3_moe"
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.tensor([5, 17, 42, 99, 3, 250, 7, 64, 128, 11])
    with torch.no_grad():
        got = model(ids[None]).logits[0]
        want = _hand_logits(sd, cfg, ids)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # the merge moved the model: the base's logits are elsewhere
    assert not torch.allclose(want, _hand_logits(_tensors(qwen3_moe_pair["a"]), cfg, ids), atol=1e-3)


def test_docs_architecture_table_lists_the_architecture_map() -> None:
    from lmbricks.checkpoint import SUPPORTED

    doc = (Path(__file__).resolve().parents[2] / "docs" / "merging.md").read_text(encoding="utf-8")
    section = doc.split("## Architectures", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(" `"): line.split("|")[2].strip(" `") for line in section.splitlines()
            if line.startswith("| `")}  # fmt: skip
    assert rows == {name: types[0] for name, (types, _classes) in SUPPORTED.items()}


def test_merge_architectures_lists_the_map_with_qwen3_moe() -> None:
    import json

    from typer.testing import CliRunner

    from lmbricks.checkpoint import SUPPORTED
    from lmbricks.cli.main import app

    res = CliRunner().invoke(app, ["merge", "architectures", "--json"])
    assert res.exit_code == 0, res.output
    found = {a["name"]: a for a in json.loads(res.output)}
    assert list(found) == list(SUPPORTED)
    assert found["qwen3_moe"] == {"name": "qwen3_moe", "model_types": ["qwen3_moe"],
                                  "architectures": ["Qwen3MoeForCausalLM"], "moe": True, "shared_expert": False,
                                  "qk_norm": True}  # fmt: skip
    assert found["qwen2_moe"]["shared_expert"] and not found["llama"]["moe"]
    narrow = CliRunner().invoke(app, ["merge", "architectures"], env={"COLUMNS": "40"})  # piped and narrow
    assert narrow.exit_code == 0 and "…" not in narrow.stdout, narrow.output
    for a in found.values():
        assert a["name"] in narrow.stdout and a["architectures"][0] in narrow.stdout, a["name"]
