"""Which parameters instruction tuning updates, and at which learning rate.

ST-MoE (arXiv 2202.08906) and "MoE meets instruction tuning" (2305.14705) fine-tune sparse models
by updating a subset of parameters (only non-expert weights, or freezing the routers) and with
their own hyper-parameters; :func:`apply_freeze` and :func:`param_groups` implement those options
for :class:`lmbricks.nn.LM`. Parameter kinds come from the names: ``.ffn.router.`` (routers),
``.ffn.experts.`` (routed experts), everything else (attention, norms, embeddings, shared experts)
is non-expert.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lmbricks.errors import ConfigError
from lmbricks.sft.config import SFTConfig


def param_kind(name: str) -> str:
    """``router``, ``expert`` or ``non_expert`` for a parameter name of :class:`lmbricks.nn.LM`."""
    if ".ffn.router." in name:
        return "router"
    if ".ffn.experts." in name:
        return "expert"
    return "non_expert"


def apply_freeze(model: nn.Module, cfg: SFTConfig) -> dict[str, int]:
    """Set ``requires_grad`` as ``cfg.freeze`` / ``cfg.train_last_layers`` say.

    Returns:
        Trainable and frozen parameter counts ``{"trainable": n, "frozen": m}``.

    Raises:
        ConfigError when nothing would be trained (e.g. freezing experts of a dense model is fine,
        freezing everything is not).
    """
    num_layers = len(getattr(model, "layers", []))
    first_trained = num_layers - cfg.train_last_layers if cfg.train_last_layers else 0
    for name, p in model.named_parameters():
        kind = param_kind(name)
        frozen = (
            (kind == "router" and "routers" in cfg.freeze)
            or (kind == "expert" and "experts" in cfg.freeze)
            or (kind == "non_expert" and "non_expert" in cfg.freeze)
            or (name.startswith("embed.") and "embeddings" in cfg.freeze)
        )
        if cfg.train_last_layers:
            if name.startswith("layers."):
                frozen |= int(name.split(".")[1]) < first_trained
            elif name.startswith("embed."):
                frozen = True  # tied heads share it; the head trains through lm_head only when untied
        p.requires_grad_(not frozen)
    counts = {"trainable": 0, "frozen": 0}
    for p in model.parameters():  # a tied embedding counts once
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    if counts["trainable"] == 0:
        raise ConfigError(f"sft.freeze {cfg.freeze} leaves no parameter to train")
    return counts


def param_groups(model: nn.Module, lr: float, weight_decay: float, cfg: SFTConfig) -> list[dict[str, Any]]:
    """AdamW groups: (decayed matrices | not decayed) x (router | expert | non_expert), each with its lr.

    Only trainable parameters are included; empty groups are left out.
    """
    scale = {"router": cfg.router_lr_scale, "expert": cfg.expert_lr_scale, "non_expert": 1.0}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        groups.setdefault((param_kind(name), p.dim() >= 2), []).append(p)
    return [
        {"params": ps, "lr": lr * scale[kind], "weight_decay": weight_decay if decay else 0.0, "kind": kind}
        for (kind, decay), ps in groups.items()
    ]
