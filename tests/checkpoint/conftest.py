"""Tiny saved models for every architecture archmap supports (built once per session, no network)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lmbricks.testing import save_tiny_model

_COMMON: dict[str, Any] = dict(
    vocab_size=384,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def _config(variant: str) -> Any:
    """A tiny transformers config; variants cover the options that change the tensor set."""
    import transformers as tf

    if variant == "llama":
        return tf.LlamaConfig(**_COMMON, tie_word_embeddings=False)
    if variant == "llama_bias_tied":  # attention_bias + mlp_bias add biases; tied drops lm_head
        return tf.LlamaConfig(**_COMMON, attention_bias=True, mlp_bias=True, tie_word_embeddings=True)
    if variant == "mistral":
        return tf.MistralConfig(**_COMMON, head_dim=16)  # head_dim != hidden / heads
    if variant == "qwen2":
        return tf.Qwen2Config(**_COMMON, tie_word_embeddings=True)
    if variant == "qwen3":  # q/k norms, head_dim != hidden / heads
        return tf.Qwen3Config(**_COMMON, head_dim=16)
    if variant == "qwen3_bias":  # attention_bias: q/k/v and o biases
        return tf.Qwen3Config(**_COMMON, attention_bias=True, tie_word_embeddings=True)
    if variant == "gemma3":
        return tf.Gemma3TextConfig(**_COMMON, head_dim=8)
    if variant == "mixtral":
        return tf.MixtralConfig(**_COMMON, num_local_experts=4, num_experts_per_tok=2)
    if variant == "qwen2_moe":
        return tf.Qwen2MoeConfig(
            **_COMMON,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=48,
        )
    if variant == "qwen2_moe_mixed":  # layer 1 dense, no q/k/v bias
        return tf.Qwen2MoeConfig(
            **{**_COMMON, "num_hidden_layers": 3},
            num_experts=3,
            num_experts_per_tok=1,
            moe_intermediate_size=8,
            shared_expert_intermediate_size=24,
            mlp_only_layers=[1],
            qkv_bias=False,
        )
    if variant == "qwen3_moe":  # q/k norms, routed experts only, head_dim != hidden / heads
        return tf.Qwen3MoeConfig(**_COMMON, head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)
    if variant == "qwen3_moe_mixed":  # layer 1 dense, attention_bias, tied
        return tf.Qwen3MoeConfig(
            **{**_COMMON, "num_hidden_layers": 3},
            num_experts=3,
            num_experts_per_tok=1,
            moe_intermediate_size=8,
            mlp_only_layers=[1],
            attention_bias=True,
            tie_word_embeddings=True,
        )
    raise KeyError(variant)


@pytest.fixture(scope="session")
def arch_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``arch_model(variant)`` -> a saved Hugging Face directory (fp32, random), built on first use."""
    root = tmp_path_factory.mktemp("arch_models")
    built: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in built:
            built[variant] = save_tiny_model(root / variant, _config(variant), seed=1)
        return built[variant]

    return get
