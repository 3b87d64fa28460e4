"""Tiny models for tests, benchmarks' quick modes and examples (no network).

The tiny models are real Hugging Face checkpoints (config.json, safetensors, tokenizer files) with
random weights, in the spirit of mergekit's "pico" Llama fixtures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

_TOKENIZER_TEXT = (
    "The quick brown fox jumps over the lazy dog. def main(): return 1 + 2 * x\n"
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home. 2 + 2 = 4, x^2 - 1 = 0.\n"
    "User: hello there Assistant: hi, how are you? 你好，世界。Bonjour le monde. Hallo Welt.\n"
)


def build_tiny_tokenizer(vocab_size: int = 384) -> Any:
    """A byte-level BPE tokenizer trained on a few sentences; every byte is representable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_TOKENIZER_TEXT] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    return fast


#: The trunk of the tiny Hugging Face configs: 2 layers, hidden 32, 4 heads, 2 KV heads, intermediate 64.
_TINY_TRUNK: dict[str, Any] = {
    "vocab_size": 384, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 256, "tie_word_embeddings": False,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}  # fmt: skip


def tiny_llama_config(**overrides: Any) -> Any:
    """A 2-layer Llama config (hidden 32, 4 heads, 2 KV heads, intermediate 64)."""
    from transformers import LlamaConfig

    return LlamaConfig(**{**_TINY_TRUNK, **overrides})


def tiny_mixtral_config(**overrides: Any) -> Any:
    """A 2-layer Mixtral config (4 experts, top-2, hidden 32, intermediate 64)."""
    from transformers import MixtralConfig

    return MixtralConfig(**{**_TINY_TRUNK, "num_local_experts": 4, "num_experts_per_tok": 2, **overrides})


def save_tiny_model(
    out: Path,
    config: Any,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    perturb_from: Path | None = None,
    noise: float = 0.0,
) -> Path:
    """Build a random model from ``config`` (or ``perturb_from`` plus Gaussian noise) and save it.

    Args:
        out: destination directory (created).
        config: a transformers config (e.g. :func:`tiny_llama_config`).
        seed: RNG seed for the initialisation and the noise.
        dtype: storage dtype of the safetensors file.
        perturb_from: if given, start from this saved model's weights instead of a fresh init.
        noise: standard deviation of Gaussian noise added to every floating tensor.

    Returns:
        ``out``, a Hugging Face directory with config.json, model.safetensors and tokenizer files.
    """
    from transformers import AutoModelForCausalLM

    from lmbricks.hub.hf_compat import quiet_loading

    torch.manual_seed(seed)
    if perturb_from is not None:
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(perturb_from, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if noise:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * noise)
    model = model.to(dtype)  # type: ignore[arg-type]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_loading():
        model.save_pretrained(out)
    build_tiny_tokenizer(model.config.vocab_size).save_pretrained(out)
    return out
