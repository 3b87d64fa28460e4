"""The reference LM gives transformers' logits (fp32, 1e-5) for every supported family, both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, MistralConfig, Qwen2Config, Qwen2MoeConfig

from lmbricks.nn import LM, load_model, save_model
from lmbricks.testing import save_tiny_model, tiny_llama_config, tiny_mixtral_config

COMMON = dict(
    vocab_size=384,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def _configs() -> dict[str, object]:
    return {
        "llama": tiny_llama_config(),
        "mistral": MistralConfig(**COMMON, sliding_window=8),  # window < sequence: the mask matters
        "qwen2": Qwen2Config(**COMMON),  # q/k/v biases
        "mixtral": tiny_mixtral_config(),
        "qwen2_moe": Qwen2MoeConfig(
            **{**COMMON, "num_hidden_layers": 3},
            moe_intermediate_size=48,
            shared_expert_intermediate_size=80,
            num_experts=4,
            num_experts_per_tok=2,
            decoder_sparse_step=2,
        ),  # layer 1 MoE, layers 0 and 2 dense
    }


@pytest.fixture(scope="module", params=list(_configs()))
def hf_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # noise makes biases and norms non-trivial (HF initialises them to 0 and 1)
    return save_tiny_model(tmp_path_factory.mktemp(request.param), _configs()[request.param], seed=3, noise=0.05)


def _hf_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


def test_logits_match_transformers(hf_dir: Path) -> None:
    ids = torch.randint(0, 384, (2, 40), generator=torch.Generator().manual_seed(0))
    model, tok = load_model(hf_dir)
    assert isinstance(model, LM) and tok is not None
    with torch.no_grad():
        ours = model(ids).logits
    ref = _hf_logits(hf_dir, ids)
    assert ref.std() > 0.05  # not a degenerate all-zero comparison
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_export_round_trip_loads_in_transformers(hf_dir: Path, tmp_path: Path) -> None:
    ids = torch.randint(0, 384, (1, 24), generator=torch.Generator().manual_seed(1))
    model, tok = load_model(hf_dir)
    out = save_model(model, tmp_path / "export", tokenizer=tok)
    src_type = json.loads((hf_dir / "config.json").read_text())["model_type"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == src_type
    assert cfg["lmbricks"]["transformers_exact"] is True
    assert (out / "lmbricks.json").exists()
    torch.testing.assert_close(_hf_logits(out, ids), _hf_logits(hf_dir, ids), atol=1e-5, rtol=0)
    again, _ = load_model(out)
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_save_refuses_existing_destination(tiny_llama: Path, tmp_path: Path) -> None:
    from lmbricks.errors import ConfigError

    model, _ = load_model(tiny_llama)
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError):
        save_model(model, tmp_path / "x")
