"""A model with one writable LoRA slot: set any factors in place, score text, repeat.

LoraHub's search and routed decoding evaluate many adapters on the same base; re-creating PEFT
modules each time would dominate. :class:`AdapterSlot` wraps the base once with a PEFT adapter of a
fixed rank and scale 1, and :meth:`set` copies new factors into it (zeros where a module is absent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lmbricks.adapters.brick import LoraPair
from lmbricks.errors import ConfigError

SLOT = "slot"


class AdapterSlot:
    """A PEFT-wrapped model with one adapter named ``slot`` whose factors are replaced in place.

    Args:
        model: a transformers causal LM (not yet PEFT-wrapped); it is wrapped in place.
        rank: the slot's rank; factors of a smaller rank are zero-padded.
        modules: module paths (``model.layers.0.self_attn.q_proj``) that get a LoRA pair.
    """

    def __init__(self, model: Any, rank: int, modules: Sequence[str]) -> None:
        from peft import LoraConfig, get_peft_model

        from lmbricks.hub.hf_compat import peft_wrapping

        if not modules:
            raise ConfigError("an adapter slot needs at least one target module")
        cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=list(modules), bias="none")
        with peft_wrapping():
            self.model = get_peft_model(model, cfg, adapter_name=SLOT)
        self.model.eval()
        self.rank = rank
        self.layers: dict[str, Any] = {}
        prefix = "base_model.model."
        for name, module in self.model.named_modules():
            if hasattr(module, "lora_A") and SLOT in module.lora_A:
                self.layers[name[len(prefix) :]] = module
        missing = sorted(set(modules) - set(self.layers))
        if missing:
            raise ConfigError(f"the model has no module {missing[0]} to adapt")
        self.clear()

    @torch.no_grad()
    def clear(self) -> None:
        """Zero every factor: the model then computes exactly the base."""
        for layer in self.layers.values():
            layer.lora_A[SLOT].weight.zero_()
            layer.lora_B[SLOT].weight.zero_()

    @torch.no_grad()
    def set(self, pairs: Mapping[str, LoraPair]) -> None:
        """Load factors (scale folded into ``B``); modules not in ``pairs`` get zeros."""
        unknown = sorted(set(pairs) - set(self.layers))
        if unknown:
            raise ConfigError(f"factors for {unknown[0]}, which this slot does not adapt")
        for name, layer in self.layers.items():
            A, B = layer.lora_A[SLOT].weight, layer.lora_B[SLOT].weight  # (r, in), (out, r)
            A.zero_()
            B.zero_()
            pair = pairs.get(name)
            if pair is None:
                continue
            if pair.rank > self.rank:
                raise ConfigError(f"{name}: rank {pair.rank} exceeds the slot's rank {self.rank}")
            A[: pair.rank].copy_(pair.A)
            B[:, : pair.rank].copy_(pair.B * pair.scale)


@torch.no_grad()
def mean_nll(model: Any, batches: Sequence[torch.Tensor]) -> float:
    """Mean next-token NLL (nats) over token sequences (each (1, T), every token after the first scored)."""
    total, count = 0.0, 0
    for ids in batches:
        logits = model(input_ids=ids).logits[:, :-1].float()  # (1, T-1, V)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
        total += float(nll)
        count += ids.shape[1] - 1
    if count == 0:
        raise ConfigError("no tokens to score (examples of one token or empty)")
    return total / count
