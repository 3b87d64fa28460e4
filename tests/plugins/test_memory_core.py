"""InfLLM identities: everything retrieved = full attention; everything local = the plain model; plug/unplug."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmbricks.errors import ConfigError
from lmbricks.nn.config import LMConfig
from lmbricks.nn.model import LM
from lmbricks.plugins.memory.config import InfLLMConfig
from lmbricks.plugins.memory.generate import generate
from lmbricks.plugins.memory.plug import MemoryPlug
from lmbricks.testing import tiny_llama_config


def _lm(**kw: object) -> LM:
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, **kw)  # type: ignore[arg-type]
    return LM(cfg).eval()


def _hf() -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_llama_config(max_position_embeddings=256), dtype=torch.float32).eval()


def _qwen2() -> torch.nn.Module:
    from transformers import Qwen2Config

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():
        for layer in model.model.layers:  # Qwen2's q/k/v carry biases: make them matter
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(std=0.5)
    return model


def _chunked_logits(model: torch.nn.Module, ids: torch.Tensor, cfg: InfLLMConfig) -> torch.Tensor:
    """All positions' logits of ``ids`` (1, T) under InfLLM, prefilled in chunks: (T, V)."""
    out = []
    with MemoryPlug(model, cfg), torch.no_grad():
        for s in range(0, ids.shape[1], cfg.chunk_size):
            chunk = ids[:, s : s + cfg.chunk_size]
            out.append(
                model(chunk).logits[0] if isinstance(model, LM) else model(input_ids=chunk, use_cache=False).logits[0]
            )
    return torch.cat(out)


def _full_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits[0] if isinstance(model, LM) else model(input_ids=ids).logits[0]


@pytest.mark.parametrize("build", [_lm, _hf, _qwen2], ids=["lm", "hf-llama", "hf-qwen2"])
def test_everything_retrieved_equals_full_attention(build: object) -> None:
    """Sinks + every block + pending + local, at true positions, is full causal attention."""
    model = build()  # type: ignore[operator]
    ids = torch.randint(0, 64, (1, 90))
    cfg = InfLLMConfig(sinks=3, window=10, block_size=7, representatives=2, top_k=100, chunk_size=6, positions="exact")
    got, want = _chunked_logits(model, ids, cfg), _full_logits(model, ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("build", [_lm, _hf], ids=["lm", "hf-llama"])
def test_everything_in_window_equals_plain_model(build: object) -> None:
    """InfLLM's own positions, input shorter than the window: the plain model's logits."""
    model = build()  # type: ignore[operator]
    ids = torch.randint(0, 64, (1, 40))
    cfg = InfLLMConfig(sinks=4, window=64, block_size=8, representatives=2, top_k=2, chunk_size=16)
    torch.testing.assert_close(_chunked_logits(model, ids, cfg), _full_logits(model, ids), atol=1e-5, rtol=1e-5)


def test_dropping_blocks_changes_the_output() -> None:
    """Retrieval matters: with a short window and no block retrieved, late logits differ from full attention."""
    model, ids = _lm(), torch.randint(0, 64, (1, 90))
    cfg = InfLLMConfig(sinks=0, window=10, block_size=7, representatives=2, top_k=0, chunk_size=6, positions="exact")
    got, want = _chunked_logits(model, ids, cfg), _full_logits(model, ids)
    torch.testing.assert_close(got[:10], want[:10], atol=1e-5, rtol=1e-5)  # inside the window: the same
    assert (got[-10:] - want[-10:]).abs().max() > 1e-3


@pytest.mark.parametrize("build", [_lm, _hf], ids=["lm", "hf-llama"])
def test_plug_unplug_restores_the_base_bit_for_bit(build: object) -> None:
    model = build()  # type: ignore[operator]
    ids = torch.randint(0, 64, (1, 30))
    before = _full_logits(model, ids)
    plug = MemoryPlug(model, InfLLMConfig(sinks=2, window=8, block_size=4, representatives=1, top_k=1, chunk_size=4))
    with plug, torch.no_grad():
        for s in range(0, 28, 4):  # 28 tokens in chunks of 4 through an 8-token window
            _full_logits(model, ids[:, s : s + 4])
        plugged = _full_logits(model, ids[:, 28:])
        assert (plugged - before[28:]).abs().max() > 1e-4  # the memory was in use
    assert torch.equal(_full_logits(model, ids), before)
    assert not plug.originals


def test_memory_blocks_and_representatives_are_built() -> None:
    model, ids = _lm(), torch.randint(0, 64, (1, 100))
    cfg = InfLLMConfig(sinks=4, window=16, block_size=8, representatives=3, top_k=2, chunk_size=8)
    with MemoryPlug(model, cfg) as plug, torch.no_grad():
        for s in range(0, 100, 8):
            model(ids[:, s : s + 8])
        mem = plug.memories[0]
        # 100 tokens: 16 local, 4 sinks, the other 80 -> 10 blocks of 8, nothing pending
        assert mem.num_blocks == 10 and mem.reps is not None and mem.reps.shape == (2, 10, 8)
        assert mem.parts["sink_pos"].tolist() == [0, 1, 2, 3]
        assert mem.parts["local_pos"].tolist() == list(range(84, 100))


def test_generate_with_memory_in_window_matches_plain_greedy() -> None:
    model, ids = _lm(), torch.randint(0, 64, (40,))
    cfg = InfLLMConfig(sinks=4, window=64, block_size=8, representatives=2, top_k=2, chunk_size=16)
    with_memory, plain = generate(model, ids, cfg, max_new_tokens=8), generate(model, ids, None, max_new_tokens=8)
    assert with_memory.tokens == plain.tokens == model.generate(ids[None], 8)[0, 40:].tolist()
    assert len(with_memory.per_token_s) == 7


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_position_embeddings = 256"):
        MemoryPlug(_hf(), InfLLMConfig(window=300, chunk_size=16))
    with pytest.raises(ConfigError, match="not a model with attention"):
        MemoryPlug(torch.nn.Linear(2, 2), InfLLMConfig())
    with pytest.raises(ConfigError, match="representatives"):
        InfLLMConfig(block_size=4, representatives=5)
    with pytest.raises(ConfigError, match="top_k"):
        InfLLMConfig(top_k=-1)
    with pytest.raises(ConfigError, match="one non-empty prompt"):
        generate(_lm(), torch.zeros(2, 3, dtype=torch.long), InfLLMConfig(window=8, chunk_size=4))


def test_decoding_step_puts_memory_at_distance_window() -> None:
    """One query (c = 1): local keys at their true distance, every memory token at distance ``window``."""
    from lmbricks.nn.model import apply_rope
    from lmbricks.plugins.memory.plug import double_rope
    from lmbricks.plugins.memory.store import LayerMemory

    torch.manual_seed(0)
    nh, nkv, hd, T, window = 4, 2, 8, 40, 6
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))

    def rope(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return double_rope(p, inv)

    cfg = InfLLMConfig(sinks=2, window=window, block_size=5, representatives=2, top_k=100, chunk_size=1)
    mem = LayerMemory(cfg, nh, nkv, hd, rope)
    q, k, v = torch.randn(nh, T, hd), torch.randn(nkv, T, hd), torch.randn(nkv, T, hd)
    for t in range(T):
        y = mem.attend(q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1])
    t = T - 1
    at = torch.tensor([t] * T)
    at[: t - window] = window  # memory tokens: the query is rotated as if window tokens after them
    kpos = torch.arange(T)
    kpos[: t - window] = 0
    cq, sq = rope(at)
    ck, sk = rope(kpos)
    qs = apply_rope(q[:, t][:, None].expand(nh, T, hd), cq, sq)  # (nh, T, hd): the query per key
    ks = apply_rope(k, ck, sk).repeat_interleave(2, 0)  # (nh, T, hd)
    probs = ((qs * ks).sum(-1) / hd**0.5).softmax(-1)  # (nh, T)
    want = torch.einsum("ht,htd->hd", probs, v.repeat_interleave(2, 0))  # (nh, hd)
    torch.testing.assert_close(y[:, 0], want, atol=1e-5, rtol=1e-5)


def test_generate_on_transformers_llama_matches_its_greedy_decoding() -> None:
    model, ids = _hf(), torch.randint(0, 64, (40,))
    model.generation_config.eos_token_id = None
    cfg = InfLLMConfig(sinks=4, window=64, block_size=8, representatives=2, top_k=2, chunk_size=16)
    want = model.generate(ids[None], max_new_tokens=6, do_sample=False, attention_mask=torch.ones(1, 40))[0, 40:]
    assert generate(model, ids, cfg, 6).tokens == generate(model, ids, None, 6).tokens == want.tolist()


def test_a_bf16_prefill_chunk_attends_in_fp32_on_cpu() -> None:
    """On a CPU a bf16 chunk's fused attention runs in fp32 (faster there, docs/plugins.md), then rounds."""
    import torch.nn.functional as F

    from lmbricks.nn.model import apply_rope
    from lmbricks.plugins.memory.plug import double_rope
    from lmbricks.plugins.memory.store import LayerMemory, attention_dtype

    torch.manual_seed(0)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16))
    mem = LayerMemory(InfLLMConfig(sinks=0, window=64, chunk_size=24), 4, 2, 16, lambda p: double_rope(p, inv_freq))
    q, k, v = torch.randn(4, 24, 16).bfloat16(), torch.randn(2, 24, 16).bfloat16(), torch.randn(2, 24, 16).bfloat16()
    got = mem.attend(q, k, v)
    cos, sin = double_rope(torch.arange(24), inv_freq)
    qr, kr = apply_rope(q.float(), cos, sin), apply_rope(k.float(), cos, sin)
    mask = torch.zeros(24, 24).masked_fill(torch.ones(24, 24, dtype=torch.bool).triu(1), float("-inf"))

    def sdpa(dtype: torch.dtype) -> torch.Tensor:
        args = (qr.to(dtype)[None], kr.to(dtype)[None], v.to(dtype)[None])
        return F.scaled_dot_product_attention(*args, attn_mask=mask.to(dtype), enable_gqa=True)[0].bfloat16()

    assert attention_dtype(q) == torch.float32 and got.dtype == torch.bfloat16
    assert torch.equal(got, sdpa(torch.float32))
    assert not torch.equal(got, sdpa(torch.bfloat16))  # the test sees the difference
