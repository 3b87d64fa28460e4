"""Reference decoder-only LM (RMSNorm, RoPE, GQA, SwiGLU, dense or MoE FFN) and Hugging Face interop."""

from __future__ import annotations

from lmbricks.nn.config import LMConfig
from lmbricks.nn.ffn import GatedFFN, take_activation_l1, track_activation_l1
from lmbricks.nn.hf import config_from_hf, config_to_hf, export_family, hf_state_dict, load_hf_weights
from lmbricks.nn.load import load_model, save_model
from lmbricks.nn.model import LM, KVCache, LMLoss, LMOutput, lm_loss

__all__ = [
    "LM",
    "GatedFFN",
    "KVCache",
    "LMConfig",
    "LMLoss",
    "LMOutput",
    "config_from_hf",
    "config_to_hf",
    "export_family",
    "hf_state_dict",
    "lm_loss",
    "load_hf_weights",
    "load_model",
    "save_model",
    "take_activation_l1",
    "track_activation_l1",
]
