"""Properties of the reference LM: KV-cached decoding, tied embeddings, config errors, MoE wiring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmbricks.errors import ConfigError
from lmbricks.nn import LM, KVCache, LMConfig, load_model, save_model
from lmbricks.train.plan import count_parameters


def _cfg(**kw: object) -> LMConfig:
    base: dict[str, object] = dict(
        vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=48
    )
    base.update(kw)
    return LMConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"sliding_window": 5},
        {"qkv_bias": True},
        {"moe": {"num_experts": 4, "top_k": 2, "intermediate_size": 24}, "moe_every": 2},
    ],
    ids=["dense", "window", "bias", "moe"],
)
def test_kv_cached_decode_equals_full_recompute(kw: dict) -> None:
    torch.manual_seed(0)
    model = LM(_cfg(**kw)).eval()
    ids = torch.randint(0, 97, (2, 19))
    with torch.no_grad():
        full = model(ids).logits  # (B, T, V)
        cache = KVCache(model.cfg.num_layers)
        steps = [model(ids[:, :7], cache=cache).logits]  # prefill 7
        steps.append(model(ids[:, 7:10], cache=cache).logits)  # a chunk of 3 after the prefix
        for t in range(10, 19):  # then one token at a time
            steps.append(model(ids[:, t : t + 1], cache=cache).logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    assert cache.length == 19


def test_generate_matches_greedy_argmax_of_full_forward() -> None:
    torch.manual_seed(1)
    model = LM(_cfg()).eval()
    prompt = torch.randint(0, 97, (1, 5))
    out = model.generate(prompt, max_new_tokens=6)
    with torch.no_grad():
        for t in range(5, 11):
            assert out[0, t] == model(out[:, :t]).logits[0, -1].argmax()


def test_tied_embeddings_share_storage_and_export(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = LM(_cfg(tie_embeddings=True))
    assert model.lm_head.weight is model.embed.weight
    assert model.num_parameters() == count_parameters(model.cfg).total
    assert count_parameters(model.cfg).total == count_parameters(_cfg()).total - 97 * 32
    out = save_model(model, tmp_path / "tied")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids).logits, atol=1e-5, rtol=0)
    again, _ = load_model(out)
    assert again.lm_head.weight is again.embed.weight


def test_one_expert_moe_equals_dense_ffn() -> None:
    torch.manual_seed(3)
    dense = LM(_cfg()).eval()
    moe = LM(_cfg(moe={"num_experts": 1, "top_k": 1, "intermediate_size": 48})).eval()
    sd = dense.state_dict()
    with torch.no_grad():
        for i, block in enumerate(moe.layers):
            for name in ("attn_norm", "attn", "ffn_norm"):
                getattr(block, name).load_state_dict(getattr(dense.layers[i], name).state_dict())
            gu = sd[f"layers.{i}.ffn.gate_up.weight"]  # (2I, H) rows [gate; up]
            block.ffn.experts.gate_up.copy_(gu.t()[None])  # (1, H, 2I) columns [gate | up]
            block.ffn.experts.down.copy_(sd[f"layers.{i}.ffn.down.weight"].t()[None])
        for name in ("embed", "norm", "lm_head"):
            getattr(moe, name).load_state_dict(getattr(dense, name).state_dict())
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        out = moe(ids)
        torch.testing.assert_close(out.logits, dense(ids).logits, atol=1e-5, rtol=0)
    assert len(out.aux) == 2 and int(out.aux[0].tokens_per_expert.sum()) == 22


def test_inexpressible_moe_saved_with_lmbricks_section(tmp_path: Path) -> None:
    torch.manual_seed(4)
    cfg = _cfg(moe={"num_experts": 4, "router": "sigmoid_topk", "top_k": 2, "intermediate_size": 24})
    model = LM(cfg).eval()
    out = save_model(model, tmp_path / "sig")
    hf = json.loads((out / "config.json").read_text())
    assert hf["lmbricks"]["transformers_exact"] is False
    assert "sigmoid_topk" in hf["lmbricks"]["inexact_because"]
    again, _ = load_model(out)
    ids = torch.randint(0, 97, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_moe_every_and_dense_layers_select_layers() -> None:
    cfg = _cfg(num_layers=6, moe={"num_experts": 4, "intermediate_size": 16}, moe_every=2, dense_layers=(3,))
    assert [cfg.is_moe_layer(i) for i in range(6)] == [False, True, False, False, False, True]
    model = LM(cfg)
    assert [b.is_moe for b in model.layers] == [False, True, False, False, False, True]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"num_heads": 3}, "num_heads"),
        ({"num_kv_heads": 3}, "num_kv_heads"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"sliding_window": -1}, "sliding_window"),
        ({"dense_layers": (7,)}, "dense_layers"),
        ({"moe": {"num_experts": 4, "top_k": 5}}, "top_k"),
        ({"moe": {"num_expert": 4}}, "moe.num_expert"),
        ({"family": "gpt2"}, "family"),
    ],
)
def test_bad_config_names_the_field(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        _cfg(**kw)


def test_from_dict_rejects_unknown_and_missing_fields() -> None:
    with pytest.raises(ConfigError, match="hiden_size"):
        LMConfig.from_dict({"vocab_size": 10, "hiden_size": 8, "num_layers": 1, "num_heads": 1})
    with pytest.raises(ConfigError, match="hidden_size"):
        LMConfig.from_dict({"vocab_size": 10, "num_layers": 1, "num_heads": 1})
    cfg = _cfg(moe={"num_experts": 2, "intermediate_size": 8})
    assert LMConfig.from_dict(cfg.to_dict()) == cfg


def test_unsupported_hf_config_names_the_field(tmp_path: Path) -> None:
    from lmbricks.nn import config_from_hf

    base = dict(
        model_type="llama",
        vocab_size=10,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
    )
    with pytest.raises(ConfigError, match="hidden_act"):
        config_from_hf({**base, "hidden_act": "gelu"})
    with pytest.raises(ConfigError, match="rope_type"):
        config_from_hf({**base, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}})
    with pytest.raises(ConfigError, match="model_type"):
        config_from_hf({**base, "model_type": "gpt2"})
