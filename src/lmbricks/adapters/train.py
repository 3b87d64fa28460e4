"""Train a LoRA brick with PEFT on a corpus domain, or continue training one (``update``).

Only the LoRA factors of one brick receive gradients; the base model stays frozen. The run is
deterministic for a given seed (document order, LoRA init, no dropout by default).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmbricks.adapters.base import BaseModel, base_model, check_brick_base, recorded_base
from lmbricks.adapters.brick import BrickInfo, LoraPair, pairs_record, read_brick, save_brick
from lmbricks.adapters.config import LoraTrainConfig
from lmbricks.adapters.train_data import train_texts, training_chunks
from lmbricks.checkpoint import check_output
from lmbricks.errors import ConfigError
from lmbricks.hub import reference_paths
from lmbricks.runtime import autocast, resolve_precision

StepCallback = Callable[[int, float], None]


def _quiet(_message: str) -> None:
    """A status callback that says nothing."""


def _lr_at(step: int, cfg: LoraTrainConfig) -> float:
    warm = max(1, int(cfg.warmup * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))  # cosine to zero


def train_loop(
    model: Any, chunks: torch.Tensor, cfg: LoraTrainConfig, on_step: StepCallback | None = None
) -> list[float]:
    """Train the parameters of ``model`` that require grad, cycling over ``chunks``.

    Args:
        model: a PEFT model whose trainable parameters are one brick's LoRA factors.
        chunks: (N, seq_len) token blocks.
        cfg: steps, batch size, learning rate schedule.
        on_step: called with ``(step, loss)`` after each step.

    Returns:
        The loss of each step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    device = params[0].device
    precision = resolve_precision(cfg.precision, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(chunks.shape[0], generator=gen)
    model.train()
    losses: list[float] = []
    cursor = 0
    for step in range(cfg.steps):
        rows = []
        for _ in range(cfg.batch_size):
            rows.append(order[cursor % len(order)])
            cursor += 1
        batch = chunks[torch.stack(rows)]  # (B, seq_len)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        with autocast(precision, device):  # bf16 matmuls; the LoRA factors and AdamW stay fp32
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, losses[-1])
    model.eval()
    return losses


def peft_pairs(model: Any, adapter: str = "default") -> dict[str, LoraPair]:
    """The LoRA factors of one adapter of a PEFT model, keyed by module path (fp32 copies)."""
    pairs: dict[str, LoraPair] = {}
    prefix = "base_model.model."
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or adapter not in lora_a:
            continue
        path = name[len(prefix) :] if name.startswith(prefix) else name
        pairs[path] = LoraPair(
            A=module.lora_A[adapter].weight.detach().float().clone(),
            B=module.lora_B[adapter].weight.detach().float().clone(),
            scale=float(module.scaling[adapter]),
        )
    return pairs


def round_trainable(model: Any, dtype: str) -> None:
    """Round the trainable (LoRA) weights to the storage dtype, so measurements match the saved brick."""
    target = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if target is None:
        return
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(p.to(target).float())


def _measure(model: Any, tokenizer: Any, domain: str | None, cfg: LoraTrainConfig) -> float | None:
    if domain is None or cfg.eval_bytes == 0:
        return None
    from lmbricks.eval import evaluate_domains

    return evaluate_domains(model, tokenizer, [domain], max_bytes=cfg.eval_bytes)[domain].ppl


def _effect(domain: str | None, before: float | None, after: float | None, cfg: LoraTrainConfig) -> dict[str, Any]:
    return {
        "domain": domain,
        "split": "test",
        "eval_bytes": cfg.eval_bytes,
        "ppl_before": before,
        "ppl_after": after,
        "ppl_change": (after / before - 1.0) if before and after else None,
    }


@dataclass
class _Run:
    """One brick's training run: the base, the data, where it is written and how it reports."""

    base: BaseModel
    cfg: LoraTrainConfig
    domain: str | None
    out: Path
    command: str
    on_step: StepCallback | None
    status: Callable[[str], None]

    def data(self, texts: Sequence[str] | None) -> tuple[Any, Any, torch.Tensor]:
        """The base model, its tokenizer and the (N, seq_len) training blocks."""
        from lmbricks.hub import load_hf_model

        model, tokenizer = load_hf_model(self.base.path)
        return model, tokenizer, training_chunks(tokenizer, train_texts(self.domain, texts, self.cfg), self.cfg)

    def measure(self, model: Any, tokenizer: Any, what: str) -> float | None:
        """Held-out perplexity of ``model`` on the run's domain (None without a domain or eval bytes)."""
        self.status(f"held-out perplexity {what} on {self.domain}")
        return _measure(model, tokenizer, self.domain, self.cfg)

    def fit(self, peft_model: Any, chunks: torch.Tensor) -> list[float]:
        """Train the brick, then round its factors to the storage dtype (measurements match the file)."""
        losses = train_loop(peft_model, chunks, self.cfg, self.on_step)
        round_trainable(peft_model, self.cfg.save_dtype)
        return losses

    def save(
        self,
        peft_model: Any,
        *,
        name: str,
        cfg: LoraTrainConfig,
        effect: dict[str, Any],
        losses: list[float],
        force: bool,
        parent: Path | None = None,
    ) -> BrickInfo:
        """Write the trained brick (``cfg`` as recorded; ``parent``: the brick an update started from)."""
        pairs = peft_pairs(peft_model)
        inputs: dict[str, Path] = {"base": self.base.path, **({} if parent is None else {"parent": parent})}
        record = pairs_record(
            pairs,
            self.base,
            name=name,
            rank=cfg.rank,
            alpha=cfg.alpha,
            domain=self.domain,
            effect=effect,
            data={"domain": self.domain, "split": "train", "tokens": cfg.train_tokens},
            steps=cfg.steps,
            loss_first=losses[0] if losses else None,
            loss_last=sum(losses[-5:]) / len(losses[-5:]) if losses else None,
        )
        recipe = {"train": cfg.model_dump(mode="json"), "precision": resolve_precision(cfg.precision, "cpu")}
        save_brick(
            self.out,
            pairs,
            self.base,
            record=record,
            command=self.command,
            recipe=recipe,
            inputs=inputs,
            force=force,
            dtype=cfg.save_dtype,
        )
        return read_brick(self.out)


def _lora_config(cfg: LoraTrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # PEFT accepts float alphas
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def train_brick(
    model_ref: str | Path,
    out: str | Path,
    cfg: LoraTrainConfig,
    *,
    domain: str | None = None,
    texts: Sequence[str] | None = None,
    name: str | None = None,
    force: bool = False,
    command: str = "lmbricks.adapters.train_brick",
    on_step: StepCallback | None = None,
    on_status: Callable[[str], None] | None = None,
) -> BrickInfo:
    """Train one LoRA brick on a domain's train split and save it as a PEFT adapter directory.

    Args:
        model_ref: base model (registry name, HF directory, GGUF file).
        out: output brick directory (written atomically; refused if it exists unless ``force``).
        cfg: training settings.
        domain: corpus domain (its ``train`` split is the data, its ``test`` split measures the effect).
        texts: training documents instead of the domain's train split (the domain still names the
            held-out text, if given).
        name: brick name (default: the output directory's name).
        force: replace an existing ``out``.
        command: recorded in ``lmbricks.json``.
        on_step: progress, ``(step, loss)``.
        on_status: one-line status messages (evaluation phases).

    Returns:
        The saved brick's :class:`BrickInfo` (``effect`` holds held-out perplexity before and after).
    """
    from peft import get_peft_model

    from lmbricks.hub.hf_compat import peft_wrapping

    out = check_output(out, reference_paths(model_ref), force)  # before any fetch or training
    run = _Run(base_model(model_ref), cfg, domain, out, command, on_step, on_status or _quiet)
    model, tokenizer, chunks = run.data(texts)
    before = run.measure(model, tokenizer, "of the base")
    torch.manual_seed(cfg.seed)
    with peft_wrapping():
        peft_model = get_peft_model(model, _lora_config(cfg))
    losses = run.fit(peft_model, chunks)
    after = run.measure(peft_model, tokenizer, "with the brick")
    effect = _effect(domain, before, after, cfg)
    return run.save(peft_model, name=name or out.name, cfg=cfg, effect=effect, losses=losses, force=force)


def update_brick(
    brick: str | Path,
    out: str | Path,
    cfg: LoraTrainConfig,
    *,
    model_ref: str | Path | None = None,
    domain: str | None = None,
    texts: Sequence[str] | None = None,
    force: bool = False,
    command: str = "lmbricks.adapters.update_brick",
    on_step: StepCallback | None = None,
    on_status: Callable[[str], None] | None = None,
) -> BrickInfo:
    """Continue training one brick on new data; the base and every other brick stay frozen.

    The brick keeps its rank and targets (``cfg.rank``/``targets``/``alpha`` are ignored); the
    effect is measured on ``domain`` (default: the brick's own domain) before and after.

    Args:
        brick: the brick directory to continue from (never modified).
        out: the updated brick directory.
        cfg: steps, learning rate, data settings.
        model_ref: its base model (default: the base recorded in the brick).
        domain: new data's domain (train split) and held-out domain.
        texts: training documents instead of the domain's train split.

    Returns:
        The updated brick's :class:`BrickInfo`.
    """
    from peft import PeftModel

    from lmbricks.hub.hf_compat import peft_wrapping

    out = check_output(out, [Path(brick), *reference_paths(model_ref)], force)
    info = read_brick(brick)
    ref = model_ref if model_ref is not None else recorded_base(info)
    check_output(out, [info.path, *reference_paths(ref)], force)  # before any fetch or training
    base = base_model(ref)
    check_brick_base(info.name, info.base_sha256, info.base_model, base, info.base_identity)
    run = _Run(base, cfg, domain or info.domain, out, command, on_step, on_status or _quiet)
    model, tokenizer, chunks = run.data(texts)
    with peft_wrapping():
        peft_model = PeftModel.from_pretrained(model, str(info.path), is_trainable=True)
    peft_model.eval()
    before = run.measure(peft_model, tokenizer, "with the brick before the update")
    losses = run.fit(peft_model, chunks)
    after = run.measure(peft_model, tokenizer, "after the update")
    kept = cfg.model_copy(update={"rank": info.rank, "alpha": info.alpha, "targets": info.targets})
    effect = _effect(run.domain, before, after, kept)
    return run.save(peft_model, name=info.name, cfg=kept, effect=effect, losses=losses, force=force, parent=info.path)
