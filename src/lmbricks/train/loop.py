"""The training loop: AdamW, schedules, accumulation, clipping, bf16 autocast, DDP, exact resume.

One optimizer step: the global batch (``batch_size`` blocks, a pure function of the seed and the
step) is cut into micro-batches; each process runs its share, gradients are accumulated (DDP
synchronises only on the last micro-batch), clipped, applied. Everything that influences the next
steps (weights, AdamW moments, scheduler, random states, the step that fixes the data order,
averages) is in each checkpoint, so ``resume=True`` continues bit-identically on CPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.nn.config import LMConfig
from lmbricks.nn.model import LM
from lmbricks.train import checkpoint as ckpt_io
from lmbricks.train.averaging import Averagers, lawa
from lmbricks.train.config import TrainConfig
from lmbricks.train.data import BatchOrder, build_chunks, micro_batches
from lmbricks.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    gather_objects,
    init_distributed,
    shutdown,
)
from lmbricks.train.schedule import schedule_fn

TINY_TOKENIZER = (
    "lmbricks-tiny"  # tokenizer name for tests and demos: lmbricks.testing.build_tiny_tokenizer()
)


class LossModule(nn.Module):
    """The LM plus its training objective, so DDP wraps a single forward.

    ``forward(ids)`` returns (total loss, LM loss, stats) where stats is a flat fp32 tensor:
    [sum over MoE layers of each auxiliary loss (in ``aux_names`` order), dropped fraction per layer,
    tokens per expert per layer (L_moe * E)]. ``ids`` is (B, T) text, or (B, 3, T) packed
    instruction-tuning blocks (ids, labels, segment ids; see :mod:`lmbricks.sft.pack`): then only
    response tokens carry loss and packed examples do not attend to each other.
    """

    def __init__(self, lm: LM, aux_loss_coef: float, z_loss_coef: float) -> None:
        super().__init__()
        self.lm = lm
        self.aux_coef, self.z_coef = aux_loss_coef, z_loss_coef
        self.aux_names: list[str] = []
        if lm.cfg.moe is not None:
            m = lm.cfg.moe_config()
            self.aux_names = {"switch": ["switch"], "importance_load": ["importance", "load"], "none": []}[
                m.aux_loss
            ]
            self.aux_names += ["z"] if m.z_loss else []

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if ids.dim() == 3:  # (B, 3, T) instruction-tuning blocks
            ids, labels, docs = ids.unbind(1)
            out = self.lm.loss(ids, labels, doc_ids=docs)
        else:
            out = self.lm.loss(ids)
        loss = out.loss
        if not out.aux:
            return loss, loss.detach(), loss.new_zeros(0)
        n = len(out.aux)
        sums = [torch.stack([a.losses[k].float() for a in out.aux]).sum() for k in self.aux_names]
        total = loss
        for name, s in zip(self.aux_names, sums, strict=True):
            total = total + (self.z_coef if name == "z" else self.aux_coef) * s / n  # mean over MoE layers
        stats = torch.cat(
            [
                torch.stack(sums).detach().reshape(-1) if sums else loss.new_zeros(0),
                torch.stack([a.dropped_fraction.float() for a in out.aux]).detach(),
                torch.cat([a.tokens_per_expert.float() for a in out.aux]).detach(),
            ]
        )
        return total, loss.detach(), stats


@dataclass
class TrainResult:
    """What a finished run left behind."""

    run_dir: Path
    steps: int
    final_checkpoint: Path | None
    records: list[dict[str, Any]] = field(default_factory=list)


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
    for key, tok_key in (
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
        ("pad_token_id", "pad_token_id"),
    ):
        fields.setdefault(key, getattr(tokenizer, tok_key, None))
    try:
        lm_cfg = LMConfig.from_dict(fields)
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from None
    if lm_cfg.vocab_size < len(tokenizer):
        raise ConfigError(
            f"model.vocab_size ({lm_cfg.vocab_size}) is smaller than the tokenizer's ({len(tokenizer)})"
        )
    return LM(lm_cfg)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm gains and biases are not decayed).

    With ``task: sft`` the groups are also split by kind (router / expert / non-expert), each with
    its learning-rate multiplier (``sft.router_lr_scale``, ``sft.expert_lr_scale``).
    """
    o = cfg.optim
    if cfg.task == "sft" and cfg.sft is not None:
        from lmbricks.sft.params import param_groups

        groups = param_groups(model, o.lr, o.weight_decay, cfg.sft)
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=o.lr,
        betas=o.betas,
        eps=o.eps,
    )


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


def _use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    if cfg.precision == "fp32":
        return False
    if cfg.precision == "bf16":
        return True
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _read_log(path: Path, upto: int) -> list[dict[str, Any]]:
    """Records of log.jsonl with step <= upto (a line cut by a kill is dropped)."""
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("step", 0) <= upto:
                records.append(rec)
    return records


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
    try:
        return _train(cfg, Path(run_dir), resume, force, chunks, tokenizer, on_step, report, info)
    finally:
        shutdown(info)


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


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    force: bool,
    chunks: Tensor | None,
    tokenizer: Any,
    on_step: Callable[[dict[str, Any]], None] | None,
    report: bool,
    info: DistInfo,
) -> TrainResult:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
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

    torch.manual_seed(cfg.seed)
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.tokenizer or str(cfg.init_from))
    sft_data = None
    if chunks is None and cfg.task == "sft":
        from lmbricks.sft.data import build_sft_data

        assert cfg.sft is not None
        sft_data = build_sft_data(cfg.sft, tokenizer)
        chunks = sft_data.train
        if info.is_main:
            (run_dir / "sft_data.json").write_text(json.dumps(sft_data.stats, indent=2) + "\n")
    if chunks is None:
        assert cfg.data is not None
        chunks = build_chunks(cfg.data, tokenizer)
    token_ids = chunks[:, 0] if chunks.dim() == 3 else chunks  # (N, T)
    order = BatchOrder(num_blocks=len(chunks), batch_size=cfg.batch_size, seed=cfg.seed)
    micro_batches(chunks[: cfg.batch_size], cfg.micro, info.rank, info.world)  # fail early on a bad split

    start = 0
    resume_from: Path | None = None
    if resume:
        start, resume_from = existing[-1]
    if resume_from is not None and cfg.lora is None:
        from lmbricks.nn.load import load_model

        model, _ = load_model(resume_from, dtype=torch.float32, hf_fallback=False)
    else:  # LoRA: checkpoints hold base + LoRA merged, so resume from the base and the saved factors
        model = build_model(cfg, tokenizer)
    if model.cfg.vocab_size < int(token_ids.max()) + 1:
        raise ConfigError(
            f"the data holds token id {int(token_ids.max())} >= model vocab_size {model.cfg.vocab_size}"
        )
    if cfg.task == "sft" and cfg.sft is not None:
        from lmbricks.sft.params import apply_freeze

        counts = apply_freeze(model, cfg.sft)
        if info.is_main and sft_data is not None:
            sft_data.stats.update(counts)
            (run_dir / "sft_data.json").write_text(json.dumps(sft_data.stats, indent=2) + "\n")
    if cfg.lora is not None:  # a LoRA brick: only its factors train (lmbricks.train.lora)
        from lmbricks.train.lora import attach_lora, load_lora_checkpoint

        lora_counts = attach_lora(model, cfg.lora, cfg.seed)
        if resume_from is not None:
            load_lora_checkpoint(model, resume_from)
        if info.is_main and sft_data is not None:
            sft_data.stats.update(lora_counts)
            (run_dir / "sft_data.json").write_text(json.dumps(sft_data.stats, indent=2) + "\n")
    if cfg.trainable is not None:  # e.g. router-only training of an assembled MoE (lmbricks.grow)
        trainable_counts = apply_trainable(model, cfg.trainable)
        if info.is_main:
            (run_dir / "trainable.json").write_text(json.dumps({"kinds": cfg.trainable, **trainable_counts}) + "\n")
    model.to(info.device).train()
    objective = LossModule(model, cfg.moe_loss.aux_loss_coef, cfg.moe_loss.z_loss_coef)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_fn(cfg.steps, cfg.schedule))
    averagers = Averagers(model, cfg.averaging)
    log_path = run_dir / "log.jsonl"
    records: list[dict[str, Any]] = []
    tokens_seen = 0
    if resume_from is not None:
        optimizer.load_state_dict(ckpt_io.load_state_file(resume_from, "optimizer.pt"))
        scheduler.load_state_dict(ckpt_io.load_state_file(resume_from, "scheduler.pt"))
        if averagers:
            averagers.load_state_dict(ckpt_io.load_state_file(resume_from, "averaging.pt"))
        state = ckpt_io.load_state_file(resume_from, "trainer.json")
        order.check_resume(state["data"], chunks)
        if state.get("world", 1) != info.world:
            raise CheckpointError(
                f"cannot resume: the checkpoint was written by {state.get('world')} process(es), "
                f"now {info.world}"
            )
        tokens_seen = state["tokens_seen"]
        ckpt_io.set_rng_state(ckpt_io.load_state_file(resume_from, f"rng-rank{info.rank}.pt"))
        if info.is_main:
            records = _read_log(log_path, start)
            log_path.write_text("".join(json.dumps(r) + "\n" for r in records))

    if info.is_main and sft_data is not None:
        if resume_from is None:
            _sft_eval(run_dir, 0, model, sft_data.held_out)  # the starting point of the curve
        else:
            _truncate_jsonl(run_dir / "sft_eval.jsonl", start)

    net: nn.Module = objective
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(
            objective,
            device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=model.cfg.moe is not None,
        )
    bf16 = _use_bf16(cfg, info.device)
    autocast = (lambda: torch.autocast(info.device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    moe_layers = model.cfg.num_moe_layers
    num_experts = model.cfg.moe_config().num_experts if model.cfg.moe is not None else 0
    log = open(log_path, "a") if info.is_main else None  # noqa: SIM115 - kept open for the whole run
    last_ckpt: Path | None = resume_from
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            batch = chunks[order.indices(step)]  # (B, T) global batch
            mine = micro_batches(batch, cfg.micro, info.rank, info.world)
            loss_sum = torch.zeros((), device=info.device)
            stats_sum: Tensor | None = None
            for i, mb in enumerate(mine):
                mb = mb.to(info.device, non_blocking=True)
                sync = i == len(mine) - 1 or not info.distributed
                ctx = nullcontext() if sync else net.no_sync()  # type: ignore[operator]
                with ctx:
                    with autocast():
                        total, lm_l, stats = net(mb)
                    (total / len(mine)).backward()
                loss_sum += lm_l.float()
                stats_sum = stats.float() if stats_sum is None else stats_sum + stats.float()
            grad_norm = (
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                if cfg.optim.grad_clip is not None
                else None
            )
            lr = float(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            n_micro_total = len(mine) * info.world
            reduced = all_reduce_sum(
                torch.cat(
                    [loss_sum.reshape(1), stats_sum if stats_sum is not None else loss_sum.new_zeros(0)]
                ),
                info,
            )
            if moe_layers:  # aux-loss-free balancing (sigmoid_topk bias), on the global expert counts
                tpe = reduced[1 + len(objective.aux_names) + moe_layers :].view(moe_layers, num_experts)
                moe_blocks = [b.ffn for b in model.layers if getattr(b, "is_moe", False)]
                for ffn, counts in zip(moe_blocks, tpe, strict=True):
                    ffn.update_router_bias(counts)
            if averagers:
                averagers.update(step + 1)
            tokens_seen += batch.shape[0] * batch.shape[-1]
            if info.device.type == "cuda":
                torch.cuda.synchronize(info.device)
            dt = time.perf_counter() - t0
            if info.is_main and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
                rec = _record(
                    step + 1,
                    reduced.cpu(),
                    n_micro_total,
                    objective.aux_names,
                    moe_layers,
                    num_experts,
                    lr,
                    grad_norm,
                    batch.shape[0] * batch.shape[-1] / dt,
                    tokens_seen,
                )
                records.append(rec)
                assert log is not None
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if on_step is not None:
                    on_step(rec)
            if info.is_main and sft_data is not None and _sft_eval_due(cfg, step + 1):
                _sft_eval(run_dir, step + 1, model, sft_data.held_out)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                last_ckpt = _checkpoint(
                    run_dir,
                    step + 1,
                    model,
                    tokenizer,
                    optimizer,
                    scheduler,
                    averagers,
                    order,
                    chunks,
                    tokens_seen,
                    cfg,
                    info,
                )
    finally:
        if log is not None:
            log.close()
    if info.is_main:
        if sft_data is not None and sft_data.prompts and cfg.sft is not None:
            from lmbricks.sft.evaluate import generate_replies

            gens = generate_replies(model, tokenizer, sft_data.prompts, cfg.sft.max_new_tokens)
            (run_dir / "generations.json").write_text(json.dumps(gens, indent=2, ensure_ascii=False) + "\n")
        if cfg.lora is not None and cfg.init_from is not None:
            from lmbricks.train.lora import ADAPTER_DIR, save_lora_brick

            last = records[-1]["loss"] if records else None
            extra = {"steps": cfg.steps, "loss_last": last}
            save_lora_brick(model, run_dir / ADAPTER_DIR, cfg.lora, cfg.init_from, extra=extra)
        _finish(run_dir, cfg, model, tokenizer, averagers, report)
    barrier(info)
    return TrainResult(run_dir=run_dir, steps=cfg.steps, final_checkpoint=last_ckpt, records=records)


def _sft_eval_due(cfg: TrainConfig, step: int) -> bool:
    assert cfg.sft is not None
    every = cfg.sft.eval_every or cfg.checkpoint_every
    return cfg.sft.eval_examples > 0 and (step % every == 0 or step == cfg.steps)


def _sft_eval(run_dir: Path, step: int, model: LM, held_out: Tensor) -> None:
    """Append the held-out response-only loss to ``run_dir/sft_eval.jsonl`` (main process only)."""
    from lmbricks.sft.evaluate import response_loss

    if len(held_out) == 0:
        return
    rec = {"step": step, "held_out_response_loss": response_loss(model, held_out)}
    with open(run_dir / "sft_eval.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def _truncate_jsonl(path: Path, upto: int) -> None:
    if path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in _read_log(path, upto)))


def _record(
    step: int,
    reduced: Tensor,
    n_micro: int,
    aux_names: list[str],
    moe_layers: int,
    num_experts: int,
    lr: float,
    grad_norm: Tensor | None,
    tokens_per_s: float,
    tokens_seen: int,
) -> dict[str, Any]:
    """One log line from the summed statistics of all micro-batches of all processes."""
    rec: dict[str, Any] = {"step": step, "loss": reduced[0].item() / n_micro, "lr": lr}
    if grad_norm is not None:
        rec["grad_norm"] = grad_norm.item()
    if moe_layers:
        a = len(aux_names)
        aux = reduced[1 : 1 + a] / (n_micro * moe_layers)  # mean over micro-batches and layers
        rec["aux"] = {name: v.item() for name, v in zip(aux_names, aux, strict=True)}
        dropped = reduced[1 + a : 1 + a + moe_layers] / n_micro
        rec["dropped_fraction"] = dropped.mean().item()
        tpe = reduced[1 + a + moe_layers :].view(moe_layers, num_experts)  # (L_moe, E) routed pairs
        load = tpe / tpe.sum(-1, keepdim=True).clamp_min(1)
        rec["expert_load"] = [[round(x, 5) for x in row] for row in load.tolist()]  # fraction per expert
        rec["expert_load_max_over_mean"] = [
            round(v, 4) for v in (tpe.max(-1).values / tpe.mean(-1).clamp_min(1e-9)).tolist()
        ]
    rec["tokens_per_s"] = round(tokens_per_s, 1)
    rec["tokens"] = tokens_seen
    return rec


def _checkpoint(
    run_dir: Path,
    step: int,
    model: LM,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    averagers: Averagers,
    order: BatchOrder,
    chunks: Tensor,
    tokens_seen: int,
    cfg: TrainConfig,
    info: DistInfo,
) -> Path:
    rngs = gather_objects(ckpt_io.rng_state(), info)
    path = ckpt_io.step_dir(run_dir, step)
    if info.is_main:
        from lmbricks.train.lora import merged_model

        path = ckpt_io.save_checkpoint(
            run_dir,
            step,
            model if cfg.lora is None else merged_model(model),  # type: ignore[arg-type]
            tokenizer,
            optimizer,
            scheduler,
            rngs,
            {"tokens_seen": tokens_seen, "world": info.world, "data": order.state_dict(chunks)},
            averagers.state_dict() if averagers else None,
        )
        if cfg.lora is not None and cfg.init_from is not None:
            from lmbricks.train.lora import save_lora_checkpoint

            save_lora_checkpoint(path, model, cfg.lora, cfg.init_from, step)
        ckpt_io.prune_checkpoints(run_dir, cfg.keep_checkpoints)
    barrier(info)
    return path


def _finish(
    run_dir: Path, cfg: TrainConfig, model: LM, tokenizer: Any, averagers: Averagers, report: bool
) -> None:
    """Averaged models (ema/, swa/, lawa/) and report.html."""
    from lmbricks.nn.load import save_model

    for name in averagers.models:
        averaged = averagers.averaged(name)
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


def _dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)
