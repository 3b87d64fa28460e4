"""Reference decoder-only LM (RMSNorm, RoPE, GQA, SwiGLU, dense or MoE FFN) and Hugging Face interop."""

from __future__ import annotations

from lmbricks.nn.config import LMConfig
from lmbricks.nn.hf import config_from_hf, config_to_hf, export_family, hf_state_dict, load_hf_weights
from lmbricks.nn.load import load_model, save_model
from lmbricks.nn.model import LM, KVCache, LMLoss, LMOutput, lm_loss

__all__ = [
    "LM",
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
]
