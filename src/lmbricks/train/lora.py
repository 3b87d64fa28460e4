"""LoRA bricks trained by ``lmbricks train``: an optional ``lora:`` section of the training YAML.

With ``lora:`` the model built by the training loop (:class:`lmbricks.nn.LM`, from ``init_from``)
is frozen and PEFT LoRA layers are injected into the chosen projections
(``peft.inject_adapter_in_model``), so only the LoRA factors train, with any task (``lm`` text or
``sft`` chats: response-only loss and packing work unchanged). At the end of the run the factors are
written as a PEFT adapter directory in Hugging Face module names (``RUN_DIR/adapter``, loadable by
``peft.PeftModel.from_pretrained`` on the base model, and by ``lmbricks adapters``)::

    task: sft
    init_from: smollm2-135m-instruct
    sft: {sources: [dialogue], seq_len: 256}
    lora: {rank: 8, alpha: 16, targets: [qkv, o, gate_up, down]}
    steps: 40
    batch_size: 4
    optim: {lr: 1.0e-3, weight_decay: 0.0}

lmbricks fuses q/k/v into one ``qkv`` projection and gate/up into ``gate_up``. A rank-r LoRA on a
fused projection, ``delta = B @ A`` with ``B`` (q + k + v rows, r), is saved exactly as three
Hugging Face LoRA modules ``q_proj`` / ``k_proj`` / ``v_proj`` that share the same ``A`` and take
their rows of ``B``; the PEFT adapter therefore reproduces the trained model's logits (tested).
Checkpoints of a LoRA run hold the merged model (base + LoRA) as their model directory, plus
``adapter/`` and the raw factors in ``trainer_state/lora.pt`` for exact resume.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from lmbricks.errors import CheckpointError, ConfigError

LoraTarget = Literal["qkv", "o", "gate_up", "down"]
# lmbricks module -> (Hugging Face parent, Hugging Face modules that split its output rows)
HF_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "qkv": ("self_attn", ("q_proj", "k_proj", "v_proj")),
    "o": ("self_attn", ("o_proj",)),
    "gate_up": ("mlp", ("gate_proj", "up_proj")),
    "down": ("mlp", ("down_proj",)),
}
_PARENT = {"qkv": "attn", "o": "attn", "gate_up": "ffn", "down": "ffn"}
_ALL_TARGETS: tuple[LoraTarget, ...] = ("qkv", "o", "gate_up", "down")
ADAPTER_DIR = "adapter"
STATE_FILE = "lora.pt"


class LoraSection(BaseModel):
    """The ``lora:`` section: train a LoRA brick instead of the model's own weights."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, gt=0, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="scale alpha / r on B @ A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input (0: deterministic)")
    targets: list[LoraTarget] = Field(
        default_factory=lambda: list(_ALL_TARGETS),
        min_length=1,
        description="projections to adapt: qkv, o (attention), gate_up, down (dense feed-forward)",
    )
    save_dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="adapter storage dtype")
    name: str | None = Field(None, description="brick name in lmbricks.json (default: the run directory's name)")


def _target_regex(targets: list[str]) -> str:
    """PEFT full-match regex for the chosen modules of dense layers (MoE experts are not Linear)."""
    names = "|".join(f"{_PARENT[t]}\\.{t}" for t in sorted(set(targets)))
    return rf"layers\.\d+\.({names})"


def attach_lora(model: nn.Module, cfg: LoraSection, seed: int = 0) -> dict[str, int]:
    """Freeze ``model`` and inject PEFT LoRA layers (A random, B zero) into the target projections.

    Args:
        model: an :class:`lmbricks.nn.LM` (modified in place).
        cfg: rank, alpha, dropout, targets.
        seed: seeds the LoRA initialisation (the global random state is left as it was).

    Returns:
        ``{"trainable": n, "frozen": m, "lora_modules": k}`` parameter and module counts.

    Raises:
        ConfigError: no module of the model matches the targets.
    """
    from peft import LoraConfig, inject_adapter_in_model

    for p in model.parameters():
        p.requires_grad_(False)
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # PEFT accepts float alphas
        lora_dropout=cfg.dropout,
        target_modules=_target_regex(list(cfg.targets)),
        bias="none",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            inject_adapter_in_model(lora, model)
        except ValueError as exc:
            raise ConfigError(f"lora.targets {list(cfg.targets)}: no module of the model matches ({exc})") from None
    counts = {"trainable": 0, "frozen": 0, "lora_modules": len(lora_layers(model))}
    for p in model.parameters():
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return counts


def lora_layers(model: nn.Module) -> dict[str, Any]:
    """The injected PEFT LoRA layers of ``model`` by module name (``layers.0.attn.qkv``)."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def lora_state(model: nn.Module) -> dict[str, Tensor]:
    """The LoRA factors of ``model`` (copies), keyed by parameter name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" in n}


def load_lora_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy saved LoRA factors into an injected model (the same targets and rank)."""
    own = dict(model.named_parameters())
    mismatch = sorted(n for n in set(own) ^ set(state) if ".lora_" in n or n in state)
    if mismatch:
        raise CheckpointError(f"LoRA state does not match the model's LoRA layers (first mismatch: {mismatch[0]})")
    with torch.no_grad():
        for n, t in state.items():
            own[n].copy_(t)


def merged_model(model: nn.Module) -> nn.Module:
    """A plain copy of an injected model with each LoRA update merged into its weight (PEFT's merge)."""
    out = copy.deepcopy(model)
    for name, layer in lora_layers(out).items():
        layer.merge()
        parent_name, child = name.rsplit(".", 1)
        setattr(out.get_submodule(parent_name), child, layer.get_base_layer())
    return out


def hf_lora_pairs(model: nn.Module) -> dict[str, Any]:
    """The LoRA factors as :class:`lmbricks.adapters.brick.LoraPair` under Hugging Face module paths.

    A fused projection's factors are split by output rows: ``qkv`` gives ``q_proj`` / ``k_proj`` /
    ``v_proj`` with the same ``A`` and their rows of ``B`` (and ``gate_up`` gives ``gate_proj`` /
    ``up_proj``), which is exactly the same update.

    Returns:
        ``{"model.layers.0.self_attn.q_proj": LoraPair, ...}`` (fp32).
    """
    from lmbricks.adapters.brick import LoraPair

    cfg: Any = model.cfg
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    pairs: dict[str, LoraPair] = {}
    for name, layer in lora_layers(model).items():
        _, idx, _, kind = name.split(".")  # layers.{i}.{attn|ffn}.{kind}
        A = layer.lora_A["default"].weight.detach().float()  # (r, in)
        B = layer.lora_B["default"].weight.detach().float()  # (out, r)
        parent, hf_names = HF_MODULES[kind]
        if kind == "qkv":
            rows = list(B.split([q, kv, kv]))
        elif kind == "gate_up":
            rows = list(B.chunk(2))
        else:
            rows = [B]
        for hf, b in zip(hf_names, rows, strict=True):
            pairs[f"model.layers.{idx}.{parent}.{hf}"] = LoraPair(
                A=A.clone(), B=b.clone(), scale=float(layer.scaling["default"])
            )
    return pairs


def save_lora_brick(
    model: nn.Module,
    out: Path,
    cfg: LoraSection,
    base_ref: str,
    *,
    command: str = "lmbricks train",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the LoRA factors as a PEFT adapter directory with ``lmbricks.json`` (atomically).

    Args:
        model: the injected model.
        out: the adapter directory (replaced if it exists).
        cfg: the ``lora:`` section (name, dtype, alpha).
        base_ref: the base model reference (``init_from``); its content hash is recorded.
        command: recorded in ``lmbricks.json``.
        extra: more fields for the brick record (steps, losses).

    Returns:
        ``out``.
    """
    from lmbricks.adapters.base import base_model
    from lmbricks.adapters.brick import pairs_record, save_brick

    base = base_model(base_ref)
    pairs = hf_lora_pairs(model)
    record = pairs_record(
        pairs, base, name=cfg.name or out.parent.name, rank=cfg.rank, alpha=cfg.alpha, **(extra or {})
    )
    save_brick(
        out,
        pairs,
        base,
        record=record,
        command=command,
        recipe={"lora": cfg.model_dump(mode="json")},
        inputs={"base": base.path},
        force=True,
        dtype=cfg.save_dtype,
    )
    return out


def save_lora_checkpoint(ckpt: Path, model: nn.Module, cfg: LoraSection, base_ref: str, step: int) -> None:
    """Add ``adapter/`` and ``trainer_state/lora.pt`` (exact factors, for resume) to a checkpoint."""
    torch.save(lora_state(model), ckpt / "trainer_state" / STATE_FILE)
    save_lora_brick(model, ckpt / ADAPTER_DIR, cfg, base_ref, extra={"steps": step})


def load_lora_checkpoint(model: nn.Module, ckpt: Path) -> None:
    """Load the exact LoRA factors a checkpoint saved into an injected model."""
    from lmbricks.train.checkpoint import load_state_file

    load_lora_state(model, load_state_file(ckpt, STATE_FILE))
