"""Setting a run up: run directory, tokenizer, data, model, optimizer, resume state (:func:`setup`).

The order of the steps is part of exact resume: the seed is set before the model is built, the
random states of a checkpoint are restored after everything that draws from them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.nn.config import LMConfig
from lmbricks.nn.model import LM
from lmbricks.sft.data import SFTData
from lmbricks.train import checkpoint as ckpt_io
from lmbricks.train.averaging import Averagers
from lmbricks.train.config import TrainConfig
from lmbricks.train.data import BatchOrder, build_chunks, micro_batches
from lmbricks.train.distributed import DistInfo, barrier
from lmbricks.train.objective import LossModule
from lmbricks.train.parallel import Layout, make_layout
from lmbricks.train.schedule import schedule_fn
from lmbricks.train.stats import truncate_log

TINY_TOKENIZER = "lmbricks-tiny"  # tokenizer name for tests and demos: lmbricks.testing.build_tiny_tokenizer()


@dataclass
class TrainState:
    """Everything the steps of a run read and change, as :func:`setup` leaves it."""

    cfg: TrainConfig
    run_dir: Path
    info: DistInfo
    tokenizer: Any
    chunks: Tensor  # (N, T) text blocks or (N, 3, T) instruction-tuning blocks
    order: BatchOrder
    model: LM
    objective: LossModule
    net: nn.Module  # the objective, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    averagers: Averagers
    sft_data: SFTData | None
    layout: Layout = field(init=False)  # how the processes share the model (parallel: ddp | fsdp | experts)
    start: int = 0  # the step the loop starts from
    resume_from: Path | None = None
    tokens_seen: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)  # log.jsonl so far (main process)


def load_tokenizer(ref: str) -> Any:
    """A tokenizer from a model reference, or the tiny test tokenizer for ``lmbricks-tiny``."""
    if ref == TINY_TOKENIZER:
        from lmbricks.testing import build_tiny_tokenizer

        return build_tiny_tokenizer()
    from lmbricks.hub import load_tokenizer as hub_tokenizer

    return hub_tokenizer(ref)


def build_model(cfg: TrainConfig, tokenizer: Any) -> LM:
    """A fresh LM from ``cfg.model`` (vocab size defaults to the tokenizer's) or ``cfg.init_from``."""
    if cfg.init_from is not None:
        from lmbricks.nn.load import load_model

        model, _ = load_model(cfg.init_from, dtype=torch.float32, hf_fallback=False)
        return model
    assert cfg.model is not None
    fields = dict(cfg.model)
    fields.setdefault("vocab_size", len(tokenizer))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        fields.setdefault(key, getattr(tokenizer, key, None))
    try:
        lm_cfg = LMConfig.from_dict(fields)
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from None
    if lm_cfg.vocab_size < len(tokenizer):
        raise ConfigError(f"model.vocab_size ({lm_cfg.vocab_size}) is smaller than the tokenizer's ({len(tokenizer)})")
    return LM(lm_cfg)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm gains and biases are not decayed).

    With ``task: sft`` the groups are also split by kind (router / expert / non-expert), each with
    its learning-rate multiplier (``sft.router_lr_scale``, ``sft.expert_lr_scale``). bf16 runs use
    torch's fused AdamW kernel (:func:`fused_adamw`).
    """
    o = cfg.optim
    fused = fused_adamw(model, cfg)
    if cfg.task == "sft" and cfg.sft is not None:
        from lmbricks.sft.params import param_groups

        groups = param_groups(model, o.lr, o.weight_decay, cfg.sft)
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, fused=fused)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=o.lr,
        betas=o.betas,
        eps=o.eps,
        fused=fused,
    )


def fused_adamw(model: nn.Module, cfg: TrainConfig) -> bool | None:
    """Whether AdamW runs torch's fused kernel: in bf16 runs on CPU or CUDA (None: the for-loop one).

    The fused kernel updates each tensor in one pass (bench/train_lm.py's 20M parameters, one
    thread: 14 ms a step against 49 for the for-loop kernel), but rounds differently by an ulp, so
    fp32 runs keep the for-loop kernel and reproduce their earlier losses bit for bit.

    Args:
        model: the trainee, already on its device.
        cfg: the run's config (its ``precision``).

    Returns:
        True for bf16 on CPU or CUDA, else None (torch's default choice).
    """
    device = next(model.parameters()).device
    return True if device.type in ("cpu", "cuda") and resolve_precision(cfg, device) == "bf16" else None


def apply_trainable(model: nn.Module, kinds: Sequence[str]) -> dict[str, int]:
    """Train only the parameter kinds named (``routers``, ``experts``, ``non_expert``); freeze the rest.

    Kinds are those of :func:`lmbricks.sft.params.param_kind` (``.ffn.router.``, ``.ffn.experts.``,
    everything else).

    Returns:
        ``{"trainable": n, "frozen": m}`` parameter counts.

    Raises:
        ConfigError: no parameter of the model is of those kinds (a dense model has no routers).
    """
    from lmbricks.sft.params import param_kind

    wanted = {{"routers": "router", "experts": "expert", "non_expert": "non_expert"}[k] for k in kinds}
    for name, p in model.named_parameters():
        p.requires_grad_(param_kind(name) in wanted)
    counts = {"trainable": 0, "frozen": 0}
    for p in model.parameters():
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    if counts["trainable"] == 0:
        raise ConfigError(f"trainable {kinds}: the model has no such parameters (a dense model has no routers)")
    return counts


def resolve_precision(cfg: TrainConfig, device: torch.device) -> Literal["fp32", "bf16"]:
    """What ``precision`` means on ``device``, decided by :func:`lmbricks.runtime.resolve_precision`.

    ``auto`` is bf16 where the device multiplies bf16 natively (CUDA >= 8.0, ROCm, CPUs with
    AMX-BF16, AVX512-BF16 or Arm BF16), else fp32; the loop autocasts to bf16 when this returns
    ``bf16`` (fp32 master weights and optimizer state either way). ``fp32`` reproduces the runs of
    before ``auto`` meant bf16 on CPUs, bit for bit.
    """
    from lmbricks.runtime import resolve_precision as runtime_precision

    return runtime_precision(cfg.precision, device)


def _write_precision(cfg: TrainConfig, run_dir: Path, info: DistInfo) -> None:
    """Record what ``precision`` resolved to in ``run_dir/precision.json`` (main process)."""
    if info.is_main:
        record = {
            "requested": cfg.precision,
            "resolved": resolve_precision(cfg, info.device),
            "device": str(info.device),
        }
        (run_dir / "precision.json").write_text(json.dumps(record) + "\n")


def prepare_run_dir(
    cfg: TrainConfig, run_dir: Path, resume: bool, force: bool, info: DistInfo
) -> tuple[int, Path] | None:
    """Check the run directory against ``resume``/``force``, clean it and write config.yaml.

    Returns:
        The newest checkpoint as (step, path) when resuming, else None.

    Raises:
        CheckpointError: ``resume`` without a checkpoint.
        ConfigError: checkpoints exist without ``resume`` or ``force``.
    """
    existing = ckpt_io.list_checkpoints(run_dir)
    if resume and not existing:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from")
    if existing and not resume and not force:
        raise ConfigError(f"{run_dir} already holds checkpoints; pass resume (--resume) or force (--force)")
    if info.is_main:
        from lmbricks.checkpoint import clean_stale_temps

        run_dir.mkdir(parents=True, exist_ok=True)
        for folder in (run_dir, run_dir / "checkpoints"):
            clean_stale_temps(folder)  # what a killed run left half-written (its pid is gone)
        if not resume:
            import shutil

            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            (run_dir / "log.jsonl").unlink(missing_ok=True)
            (run_dir / "sft_eval.jsonl").unlink(missing_ok=True)
        (run_dir / "config.yaml").write_text(_dump_yaml(cfg))
    barrier(info)
    return existing[-1] if resume else None


def load_data(cfg: TrainConfig, tokenizer: Any, run_dir: Path, info: DistInfo) -> tuple[Tensor, SFTData | None]:
    """The training blocks from ``cfg.data`` (N, T), or from ``cfg.sft`` (N, 3, T) with its SFT data."""
    if cfg.task == "sft":
        from lmbricks.sft.data import build_sft_data

        assert cfg.sft is not None
        sft_data = build_sft_data(cfg.sft, tokenizer)
        _write_sft_stats(run_dir, sft_data, info)
        return sft_data.train, sft_data
    assert cfg.data is not None
    return build_chunks(cfg.data, tokenizer), None


def build_trainee(
    cfg: TrainConfig,
    tokenizer: Any,
    token_ids: Tensor,
    resume_from: Path | None,
    sft_data: SFTData | None,
    run_dir: Path,
    info: DistInfo,
) -> LM:
    """The model to train: built or resumed, then SFT freezing, a LoRA brick or ``trainable`` applied.

    Args:
        token_ids: (N, T) the training tokens (checked against the vocabulary).
        resume_from: the checkpoint resumed from (LoRA runs resume from the base and saved factors).
        sft_data: its statistics gain the parameter counts (``sft_data.json``).
    """
    if resume_from is not None and cfg.lora is None:
        from lmbricks.nn.load import load_model

        model, _ = load_model(resume_from, dtype=torch.float32, hf_fallback=False)
    else:  # LoRA: checkpoints hold base + LoRA merged, so resume from the base and the saved factors
        model = build_model(cfg, tokenizer)
    if model.cfg.vocab_size < int(token_ids.max()) + 1:
        raise ConfigError(f"the data holds token id {int(token_ids.max())} >= model vocab_size {model.cfg.vocab_size}")
    if cfg.task == "sft" and cfg.sft is not None:
        from lmbricks.sft.params import apply_freeze

        counts = apply_freeze(model, cfg.sft)
        if sft_data is not None:
            sft_data.stats.update(counts)
            _write_sft_stats(run_dir, sft_data, info)
    if cfg.lora is not None:  # a LoRA brick: only its factors train (lmbricks.train.lora)
        from lmbricks.train.lora import attach_lora, load_lora_checkpoint

        lora_counts = attach_lora(model, cfg.lora, cfg.seed)
        if resume_from is not None:
            load_lora_checkpoint(model, resume_from)
        if sft_data is not None:
            sft_data.stats.update(lora_counts)
            _write_sft_stats(run_dir, sft_data, info)
    if cfg.trainable is not None:  # e.g. router-only training of an assembled MoE (lmbricks.grow)
        trainable_counts = apply_trainable(model, cfg.trainable)
        if info.is_main:
            (run_dir / "trainable.json").write_text(json.dumps({"kinds": cfg.trainable, **trainable_counts}) + "\n")
    return model


def setup(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    force: bool,
    chunks: Tensor | None,
    tokenizer: Any,
    info: DistInfo,
) -> TrainState:
    """Everything up to the first step: the run directory, data, model, optimizer, resumed state.

    Args:
        chunks: pre-packed training blocks, or None to build them from ``cfg``.
        tokenizer: the tokenizer, or None for ``cfg.tokenizer`` (or ``cfg.init_from``'s).

    Raises:
        ConfigError, CheckpointError: as :func:`prepare_run_dir`, :func:`build_trainee` and
            :func:`restore` say.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    resume_point = prepare_run_dir(cfg, run_dir, resume, force, info)
    _write_precision(cfg, run_dir, info)
    resume_from = resume_point[1] if resume_point is not None else None
    torch.manual_seed(cfg.seed)
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.tokenizer or str(cfg.init_from))
    sft_data = None
    if chunks is None:
        chunks, sft_data = load_data(cfg, tokenizer, run_dir, info)
    order = BatchOrder(num_blocks=len(chunks), batch_size=cfg.batch_size, seed=cfg.seed)
    micro_batches(chunks[: cfg.batch_size], cfg.micro, info.rank, info.world)  # fail early on a bad split
    token_ids = chunks[:, 0] if chunks.dim() == 3 else chunks  # (N, T)
    model = build_trainee(cfg, tokenizer, token_ids, resume_from, sft_data, run_dir, info)
    model.to(info.device).train()
    loss = LossModule(model, cfg.moe_loss.aux_loss_coef, cfg.moe_loss.z_loss_coef)
    layout = make_layout(cfg, info)
    layout.shard(loss, resolve_precision(cfg, info.device) == "bf16")  # FSDP / expert shards, before AdamW
    if cfg.parallel.global_load:
        layout.share_load(model)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_fn(cfg.steps, cfg.schedule))
    averagers = Averagers(model, cfg.averaging)
    state = TrainState(
        cfg, run_dir, info, tokenizer, chunks, order, model, loss, loss, optimizer, scheduler, averagers, sft_data
    )
    state.layout = layout
    if resume_point is not None:
        restore(state, *resume_point)
    if info.is_main and sft_data is not None:
        if resume_from is None:
            sft_eval(run_dir, 0, model, sft_data.held_out)  # the starting point of the curve
        else:
            truncate_log(run_dir / "sft_eval.jsonl", state.start)
    state.net = layout.wrap(loss)  # DDP under torchrun, else the objective itself
    return state


def restore(state: TrainState, step: int, ckpt: Path) -> None:
    """Load the optimizer, scheduler, averages, counters and random states of ``ckpt`` into ``state``.

    Args:
        step: the checkpoint's step, where the loop continues.

    The main process also cuts ``log.jsonl`` back to the checkpoint's step.

    Raises:
        CheckpointError: a file is missing or unreadable, or another number of processes wrote it.
        ConfigError: the data differs from the data the checkpoint was trained on.
    """
    info = state.info
    state.layout.load_optimizer(state.model, state.optimizer, ckpt)
    state.scheduler.load_state_dict(ckpt_io.load_state_file(ckpt, "scheduler.pt"))
    if state.averagers:
        state.averagers.load_state_dict(ckpt_io.load_state_file(ckpt, "averaging.pt"))
    trainer = ckpt_io.load_state_file(ckpt, "trainer.json")
    state.order.check_resume(trainer["data"], state.chunks)
    written = trainer.get("world", 1)
    if written != info.world and not state.layout.reshards:
        raise CheckpointError(
            f"cannot resume: the checkpoint was written by {written} process(es), now {info.world}"
            " (parallel: fsdp or experts resume on another number)"
        )
    state.start, state.resume_from, state.tokens_seen = step, ckpt, trainer["tokens_seen"]
    ckpt_io.set_rng_state(ckpt_io.load_state_file(ckpt, f"rng-rank{info.rank % written}.pt"))
    if info.is_main:
        log_path = state.run_dir / "log.jsonl"
        log_path.touch()
        state.records = truncate_log(log_path, state.start)


def sft_eval(run_dir: Path, step: int, model: LM, held_out: Tensor) -> None:
    """Append the held-out response-only loss to ``run_dir/sft_eval.jsonl`` (main process only)."""
    from lmbricks.sft.evaluate import response_loss

    if len(held_out) == 0:
        return
    rec = {"step": step, "held_out_response_loss": response_loss(model, held_out)}
    with open(run_dir / "sft_eval.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def _write_sft_stats(run_dir: Path, sft_data: SFTData, info: DistInfo) -> None:
    if info.is_main:
        (run_dir / "sft_data.json").write_text(json.dumps(sft_data.stats, indent=2) + "\n")


def _dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)
