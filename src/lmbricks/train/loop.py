"""The training loop: AdamW, schedules, accumulation, clipping, bf16 autocast, DDP, exact resume.

One optimizer step: the global batch (``batch_size`` blocks, a pure function of the seed and the
step) is cut into micro-batches; each process runs its share, gradients are accumulated (DDP
synchronises only on the last micro-batch), clipped, applied. Everything that influences the next
steps (weights, AdamW moments, scheduler, random states, the step that fixes the data order,
averages) is in each checkpoint, so ``resume=True`` continues bit-identically on CPU.

A run is :func:`lmbricks.train.setup.setup`, then :func:`run`: :func:`train_step`, the log line and
:func:`save_step` per step, then :func:`finish`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.nn.model import LM
from lmbricks.train import checkpoint as ckpt_io
from lmbricks.train.averaging import lawa
from lmbricks.train.config import TrainConfig
from lmbricks.train.data import micro_batches
from lmbricks.train.distributed import barrier, gather_objects, init_distributed, shutdown
from lmbricks.train.setup import TINY_TOKENIZER, TrainState, resolve_precision, setup, sft_eval
from lmbricks.train.stats import StepStats, log_record


@dataclass
class TrainResult:
    """What a finished run left behind."""

    run_dir: Path
    steps: int
    final_checkpoint: Path | None
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StepResult:
    """One optimizer step, as the log line needs it."""

    stats: StepStats  # summed over the micro-batches of all processes
    n_micro: int  # micro-batches over all processes
    lr: float  # the learning rate the step used
    grad_norm: Tensor | None  # () before clipping; None without clipping
    tokens: int  # in the global batch
    seconds: float


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    force: bool = False,
    chunks: Tensor | None = None,
    tokenizer: Any = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    report: bool = True,
    inputs: Sequence[str | Path] = (),
) -> TrainResult:
    """Train (or continue training) a model as ``cfg`` says, in ``run_dir``.

    Args:
        cfg: the validated training config.
        run_dir: the run directory (config.yaml, log.jsonl, checkpoints/, report.html).
        resume: continue from the newest checkpoint in ``run_dir``.
        force: start afresh even if ``run_dir`` holds checkpoints (they are deleted).
        chunks: pre-packed (N, seq_len) training blocks, or (N, 3, seq_len) instruction-tuning
            blocks; default: built from ``cfg.data`` (or ``cfg.sft``).
        tokenizer: the tokenizer; default: ``cfg.tokenizer`` or ``cfg.init_from``'s.
        on_step: called on the main process with each logged record (progress bars).
        report: write report.html at the end.
        inputs: more paths ``run_dir`` must keep apart from (the config file); ``init_from``, the
            tokenizer and the data files are added from ``cfg``.

    Returns:
        A :class:`TrainResult`; under DDP only the main process's ``records`` are filled.

    Raises:
        ConfigError: ``run_dir`` is a file, is or lies inside an input, or holds one (it would be
            overwritten or deleted); checkpoints exist without ``resume`` or ``force``.
    """
    check_run_dir(cfg, Path(run_dir), inputs)  # before any work, on every process
    info = init_distributed(cfg.device)
    finished = False
    try:
        result = run(setup(cfg, Path(run_dir), resume, force, chunks, tokenizer, info), on_step, report)
        finished = True
        return result
    finally:
        shutdown(info, finished)


def check_run_dir(cfg: TrainConfig, run_dir: Path, inputs: Sequence[str | Path] = ()) -> None:
    """The input guard for a run directory: apart from every input the run reads.

    A run directory is lmbricks' own and is written in place (``config.yaml``, ``log.jsonl``,
    ``checkpoints/``, ``report.html``; ``force`` deletes the checkpoints and logs), so it must not be
    an input, lie inside one (``init_from``) or hold one (the config file, data files).

    Raises:
        ConfigError: naming the run directory and the input.
    """
    from lmbricks.checkpoint import check_apart
    from lmbricks.hub import reference_paths

    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file; the run directory must be a directory")
    refs: list[str | Path | None] = [cfg.init_from, cfg.tokenizer if cfg.tokenizer != TINY_TOKENIZER else None]
    found = [*inputs, *(p for ref in refs for p in reference_paths(ref))]
    found += list(cfg.data.text_files) if cfg.data is not None else []
    found += list(cfg.sft.jsonl) if cfg.sft is not None else []
    check_apart(run_dir, found)


def run(state: TrainState, on_step: Callable[[dict[str, Any]], None] | None, report: bool) -> TrainResult:
    """The steps of a run set up by :func:`lmbricks.train.setup.setup`: train, log, evaluate, checkpoint, finish.

    Args:
        state: as ``setup`` left it (possibly resumed at ``state.start``).
        on_step: called on the main process with each logged record.
        report: write report.html at the end.
    """
    cfg, info, run_dir = state.cfg, state.info, state.run_dir
    log = open(run_dir / "log.jsonl", "a") if info.is_main else None  # noqa: SIM115 - kept open for the whole run
    last_ckpt: Path | None = state.resume_from
    try:
        for step in range(state.start, cfg.steps):
            done = train_step(state, step)
            if log is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
                _log_step(state, step + 1, done, log, on_step)
            if info.is_main and state.sft_data is not None and _sft_eval_due(cfg, step + 1):
                sft_eval(run_dir, step + 1, state.model, state.sft_data.held_out)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                last_ckpt = save_step(state, step + 1)
    finally:
        if log is not None:
            log.close()
    if info.is_main:
        finish(state, report)
    barrier(info)
    return TrainResult(run_dir=run_dir, steps=cfg.steps, final_checkpoint=last_ckpt, records=state.records)


def train_step(state: TrainState, step: int) -> StepResult:
    """One optimizer step on the global batch of ``step``: micro-batches, clip, AdamW, statistics.

    Also updates what follows the step: the aux-loss-free router biases (on the global expert
    counts), the weight averages and ``state.tokens_seen``.
    """
    cfg, info, net = state.cfg, state.info, state.net
    t0 = time.perf_counter()
    batch = state.chunks[state.order.indices(step)]  # (B, T) global batch
    mine = micro_batches(batch, cfg.micro, info.rank, info.world)
    bf16 = resolve_precision(cfg, info.device) == "bf16"
    stats: StepStats | None = None
    for i, mb in enumerate(mine):
        mb = mb.to(info.device, non_blocking=True)
        with state.layout.accumulate(net, sync=i == len(mine) - 1):
            with torch.autocast(info.device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
                total, mb_stats = net(mb)
            (total / len(mine)).backward()
        stats = mb_stats if stats is None else stats + mb_stats
    assert stats is not None
    state.layout.reduce_gradients(state.model)
    grad_norm = state.layout.clip(state.model, cfg.optim.grad_clip) if cfg.optim.grad_clip is not None else None
    lr = float(state.scheduler.get_last_lr()[0])
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    reduced = stats.all_reduce(info)
    if reduced.moe_layers:  # aux-loss-free balancing (sigmoid_topk bias), on the global expert counts
        moe_blocks: list[Any] = [b.ffn for b in state.model.layers if getattr(b, "is_moe", False)]
        for ffn, counts in zip(moe_blocks, reduced.tokens_per_expert, strict=True):
            ffn.update_router_bias(counts)
    if state.averagers:
        state.averagers.update(step + 1)
    tokens = batch.shape[0] * batch.shape[-1]
    state.tokens_seen += tokens
    if info.device.type == "cuda":
        torch.cuda.synchronize(info.device)
    return StepResult(reduced, len(mine) * info.world, lr, grad_norm, tokens, time.perf_counter() - t0)


def _log_step(
    state: TrainState, step: int, done: StepResult, log: IO[str], on_step: Callable[[dict[str, Any]], None] | None
) -> None:
    rec = log_record(
        step, done.stats, done.n_micro, done.lr, done.grad_norm, done.tokens / done.seconds, state.tokens_seen
    )
    state.records.append(rec)
    log.write(json.dumps(rec) + "\n")
    log.flush()
    if on_step is not None:
        on_step(rec)


def _sft_eval_due(cfg: TrainConfig, step: int) -> bool:
    assert cfg.sft is not None
    every = cfg.sft.eval_every or cfg.checkpoint_every
    return cfg.sft.eval_examples > 0 and (step % every == 0 or step == cfg.steps)


def save_step(state: TrainState, step: int) -> Path:
    """Write the checkpoint of ``step`` (model, trainer state, every process's random state).

    Every process takes part (the random states are gathered); the main process writes, adds the
    LoRA factors of a LoRA run, and prunes old checkpoints.

    Returns:
        The checkpoint directory.
    """
    cfg, info, layout = state.cfg, state.info, state.layout
    rngs = gather_objects(ckpt_io.rng_state(), info)
    path = ckpt_io.step_dir(state.run_dir, step)
    model = layout.full_model(state.model)  # sharded layouts gather (every process), main only
    optimizer = layout.optimizer_state(state.model, state.optimizer)
    shards = layout.save_shards(state.model, state.optimizer, ckpt_io.shards_dir(state.run_dir, step))
    if info.is_main:
        from lmbricks.train.lora import merged_model

        assert model is not None
        trainer = {"tokens_seen": state.tokens_seen, "world": info.world, "data": state.order.state_dict(state.chunks)}
        trainer["precision"] = resolve_precision(cfg, info.device)  # what auto resolved to (bf16: autocast)
        trainer["parallel"] = layout.name
        path = ckpt_io.save_checkpoint(
            state.run_dir,
            step,
            model if cfg.lora is None else merged_model(model),  # type: ignore[arg-type]
            state.tokenizer,
            optimizer,
            state.scheduler,
            rngs,
            trainer,
            state.averagers.state_dict() if state.averagers else None,
            shards,
        )
        if cfg.lora is not None and cfg.init_from is not None:
            from lmbricks.train.lora import save_lora_checkpoint

            save_lora_checkpoint(path, model, cfg.lora, cfg.init_from, step)
        ckpt_io.prune_checkpoints(state.run_dir, cfg.keep_checkpoints)
    barrier(info)
    return path


def finish(state: TrainState, report: bool) -> None:
    """What a finished run adds (main process): SFT generations, the LoRA brick, averages, report.html.

    Averaged models go to ``ema/``, ``swa/`` and ``lawa/``; the LoRA brick to ``adapter/``.
    """
    from lmbricks.nn.load import save_model

    cfg, run_dir, model, tokenizer = state.cfg, state.run_dir, state.model, state.tokenizer
    sft_data = state.sft_data
    if sft_data is not None and sft_data.prompts and cfg.sft is not None:
        from lmbricks.sft.evaluate import generate_replies

        gens = generate_replies(model, tokenizer, sft_data.prompts, cfg.sft.max_new_tokens)
        (run_dir / "generations.json").write_text(json.dumps(gens, indent=2, ensure_ascii=False) + "\n")
    if cfg.lora is not None and cfg.init_from is not None:
        from lmbricks.train.lora import ADAPTER_DIR, save_lora_brick

        extra = {"steps": cfg.steps, "loss_last": state.records[-1]["loss"] if state.records else None}
        save_lora_brick(model, run_dir / ADAPTER_DIR, cfg.lora, cfg.init_from, extra=extra)
    for name in state.averagers.models:
        averaged = state.averagers.averaged(name)
        assert isinstance(averaged, LM)
        save_model(averaged, run_dir / name, tokenizer, force=True)
    k = cfg.averaging.lawa_k
    if k is not None:
        ckpts = [p for _, p in ckpt_io.list_checkpoints(run_dir)][-k:]
        if len(ckpts) >= 2:
            lawa(ckpts, run_dir / "lawa")
    if report:
        from lmbricks.train.report import write_report

        write_report(run_dir)
