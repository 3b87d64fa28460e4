"""``lmbricks sparsify relufy``: swap SwiGLU for ReGLU, train with a rising L1 penalty, shift the threshold.

After ProSparse (arXiv 2402.13516). The steps are ``lmbricks train``'s (:func:`lmbricks.train.loop.train_step`:
bf16 autocast, AdamW, checkpoints with exact resume); this module only sets the L1 factor of each
step (:func:`~lmbricks.sparsify.schedule.l1_factor`), records the recovery curve (per-domain bits
per byte and exact-zero fraction, ``curve.jsonl`` in the run directory) and writes the result, whose
``lmbricks.json`` recipe holds the output's own measurement after the threshold
(``final_measurement``: per-domain bits per byte and exact-zero fraction, :func:`final_record`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmbricks.checkpoint import check_output
from lmbricks.errors import ConfigError
from lmbricks.nn.config import LMConfig
from lmbricks.nn.ffn import track_activation_l1
from lmbricks.nn.load import load_model, save_model
from lmbricks.nn.model import LM
from lmbricks.sparsify.config import RelufyConfig
from lmbricks.sparsify.measure import calibration_gates, measure
from lmbricks.sparsify.schedule import l1_factor, threshold_for_sparsity


@dataclass
class RelufyResult:
    """What :func:`relufy` produced: the output, the threshold and the recovery curve."""

    out: Path
    steps: int  # optimizer steps done (all runs of a resumed training)
    tokens: int  # training tokens seen
    threshold: float  # the FATReLU T of the output (0: ReGLU)
    curve: list[dict[str, Any]] = field(default_factory=list)  # one record per evaluation
    final: dict[str, Any] = field(default_factory=dict)  # the output's measurement


def swap_activation(model: LM, activation: str, threshold: float = 0.0) -> LM:
    """A new LM with ``model``'s tensors (shared, not copied) and ``activation`` in its dense FFNs."""
    cfg = LMConfig.from_dict({**model.cfg.to_dict(), "activation": activation, "activation_threshold": threshold})
    new = LM(cfg)
    new.load_state_dict(model.state_dict(), assign=True)
    return new


def _load_source(cfg: RelufyConfig) -> tuple[LM, Any, Path]:
    """The source model (an lmbricks LM, finite weights) and its tokenizer; errors name the model/tensor."""
    from lmbricks.hub import resolve_model

    src = resolve_model(cfg.model)
    model, tok = load_model(src)
    if not isinstance(model, LM) or model.cfg.moe is not None:
        raise ConfigError(f"{cfg.model}: relufy needs a dense Llama/Mistral/Qwen2-family model")
    for name, p in model.state_dict().items():
        if not torch.isfinite(p).all():
            raise ConfigError(f"{cfg.model}: tensor {name} has non-finite values")
    return model, tok, src


def relufy(
    cfg: RelufyConfig,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    eval_texts: dict[str, str] | None = None,
) -> RelufyResult:
    """ReLU-fy ``cfg.model`` into ``cfg.out`` (see the module docstring).

    Args:
        cfg: the validated configuration.
        on_step: called with each training log record and curve point (progress bars).
        eval_texts: domain -> held-out text for the curve (default: each domain's validation split).

    Returns:
        The :class:`RelufyResult`.

    Raises:
        ConfigError: unknown or MoE model, non-finite weights, an output in the way of an input.
    """
    from lmbricks.hub import reference_paths

    check_output(cfg.out, reference_paths(cfg.model), cfg.force)  # before any load
    model, tok, src = _load_source(cfg)
    texts = eval_texts if eval_texts is not None else _validation_texts(cfg)
    relu = swap_activation(model, "reglu")
    curve: list[dict[str, Any]] = []
    steps, tokens = 0, 0
    if cfg.steps > 0:
        relu, curve, steps, tokens = _train(cfg, relu, tok, texts, on_step)
    threshold = cfg.threshold
    if cfg.target_sparsity is not None:
        ids = tok("\n\n".join(texts.values()), return_tensors="pt").input_ids[:, : 4 * cfg.seq_len]
        threshold = threshold_for_sparsity(calibration_gates(relu, ids.reshape(1, -1)), cfg.target_sparsity)
    final = swap_activation(relu, "fatrelu" if threshold > 0 else "reglu", threshold)
    measured = measure(final, tok, texts, cfg.eval_tokens, cfg.seq_len)
    recipe = {"source": str(src), **json.loads(cfg.model_dump_json()), "threshold_applied": threshold}
    recipe["final_measurement"] = final_record(measured, cfg, steps, tokens)
    provenance = {"command": "sparsify relufy", "recipe": recipe}
    out = save_model(final.float(), cfg.out, tokenizer=tok, force=cfg.force, provenance=provenance)
    return RelufyResult(out, steps, tokens, threshold, curve, measured)


def final_record(measured: dict[str, Any], cfg: RelufyConfig, steps: int, tokens: int) -> dict[str, Any]:
    """The output's measurement for lmbricks.json: :func:`measure`'s figures and how they were taken.

    Args:
        measured: :func:`~lmbricks.sparsify.measure.measure` of the output (after the threshold).
        cfg: the configuration (the texts, ``eval_tokens`` and ``seq_len`` of the measurement).
        steps: optimizer steps done.
        tokens: training tokens seen.

    Returns:
        ``{"bpb", "zero_fraction", "mean_bpb", "mean_zero_fraction"}`` plus ``texts`` (the
        validation split of the domains, or the text files), ``eval_tokens``, ``seq_len``,
        ``steps`` and ``tokens``.
    """
    texts = [str(p) for p in cfg.text_files] if cfg.text_files else f"validation split of {', '.join(cfg.domains)}"
    where = {"texts": texts, "eval_tokens": cfg.eval_tokens, "seq_len": cfg.seq_len}
    return {**measured, **where, "steps": steps, "tokens": tokens}


def _validation_texts(cfg: RelufyConfig) -> dict[str, str]:
    """Held-out text per domain (validation split), or the start of each ``text_files`` file."""
    from lmbricks.data.corpus import domain_text

    if cfg.text_files:
        return {p.stem: p.read_text(encoding="utf-8")[: 8 * cfg.eval_tokens] for p in cfg.text_files}
    return {d: domain_text(d, "validation", max_bytes=8 * cfg.eval_tokens) for d in cfg.domains}


def _train_config(cfg: RelufyConfig, init: Path) -> Any:
    from lmbricks.train.config import TrainConfig

    data: dict[str, Any] = {"seq_len": cfg.seq_len, "max_tokens": cfg.data_tokens}
    data |= {"text_files": [str(p) for p in cfg.text_files]} if cfg.text_files else {"domains": cfg.domains}
    return TrainConfig.model_validate(
        {
            "init_from": str(init),
            "data": data,
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "optim": {"lr": cfg.lr},
            "schedule": {"kind": "constant", "warmup_steps": min(cfg.warmup_steps, cfg.steps - 1)},
            "precision": cfg.precision,
            "checkpoint_every": cfg.checkpoint_every,
            "seed": cfg.seed,
            "threads": cfg.threads,
            "log_every": 1,
        }
    )


def _train(
    cfg: RelufyConfig, relu: LM, tok: Any, texts: dict[str, str], on_step: Callable[[dict[str, Any]], None] | None
) -> tuple[LM, list[dict[str, Any]], int, int]:
    """Continue training ``relu`` with the progressive L1 penalty; returns (model, curve, steps, tokens)."""
    from lmbricks.train.distributed import init_distributed
    from lmbricks.train.loop import save_step, train_step
    from lmbricks.train.setup import setup

    work = cfg.work_dir
    init = work / "init"
    if not (init / "config.json").exists() or cfg.force:
        save_model(relu, init, tokenizer=tok, force=True)
    tcfg = _train_config(cfg, init)
    resume = cfg.resume and any((work / "train" / "checkpoints").glob("step-*"))
    state = setup(tcfg, work / "train", resume, not resume, None, None, init_distributed("cpu"))
    curve_file = work / "curve.jsonl"
    curve = _read_curve(curve_file, state.start) if resume else []
    if not curve:
        curve.append(_point(state.model, tok, texts, cfg, 0, 0, 0.0))
    _write_curve(curve_file, curve)
    t0, step = time.monotonic(), state.start
    while step < tcfg.steps:
        state.objective.activation_l1_coef = l1_factor(step, cfg.l1_factor, cfg.l1_increase_steps)
        done = train_step(state, step)
        step += 1
        rec = {
            "step": step,
            "loss": float(done.stats.lm_loss) / done.n_micro,
            "l1": float(done.stats.aux.get("activation_l1", 0.0)) / done.n_micro,
            "l1_factor": state.objective.activation_l1_coef,
            "tokens": state.tokens_seen,
        }
        if on_step is not None:
            on_step(rec)
        out_of_time = cfg.minutes is not None and time.monotonic() - t0 > 60 * cfg.minutes
        if step % cfg.checkpoint_every == 0 or step == tcfg.steps or out_of_time:
            save_step(state, step)
        if step % cfg.eval_every == 0 or step == tcfg.steps or out_of_time:
            curve.append(_point(state.model, tok, texts, cfg, step, state.tokens_seen, rec["l1_factor"]))
            _write_curve(curve_file, curve)
        if out_of_time:
            break
    track_activation_l1(state.model, False)
    return state.model, curve, step, state.tokens_seen


def _point(
    model: LM, tok: Any, texts: dict[str, str], cfg: RelufyConfig, step: int, tokens: int, factor: float
) -> dict[str, Any]:
    return {
        "step": step,
        "tokens": tokens,
        "l1_factor": factor,
        **measure(model, tok, texts, cfg.eval_tokens, cfg.seq_len),
    }


def _read_curve(path: Path, upto: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in recs if r["step"] <= upto]


def _write_curve(path: Path, curve: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in curve))
    tmp.replace(path)


__all__ = ["RelufyResult", "final_record", "relufy", "swap_activation"]
