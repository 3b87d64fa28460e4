"""The arms of the dense-vs-MoE comparison: their configs, training, and scoring (docs/moe.md).

The three arms share everything but the feed-forward block: the same packed training blocks in the
same order (one seed), the same token budget, optimiser and schedule, and the same **active**
feed-forward parameters per token. With expert width I:

- ``dense``: a SwiGLU of width 2I in every layer;
- ``top2``: 8 SwiGLU experts of width I, softmax top-2 (Mixtral): 2 x I active;
- ``switch``: 8 SwiGLU experts of width 2I, Switch top-1: 2I active.

The MoE arms add only their (E, H) router per layer (counted in the tables).
:mod:`lmbricks.train.compare` runs the three arms; the tour's ``moe`` section and
``scripts/moe_experiment.py`` call it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.train.checkpoint import list_checkpoints
from lmbricks.train.loop import train
from lmbricks.train.plan import count_parameters

ARMS: tuple[str, ...] = ("dense", "top2", "switch")
ARM_LABELS = {"dense": "dense SwiGLU", "top2": "8 experts, top-2", "switch": "8 experts, Switch top-1"}
DOMAINS: tuple[str, ...] = DEFAULT_DOMAINS


def arm_models(
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    expert_intermediate: int,
    num_experts: int = 8,
    num_kv_heads: int | None = None,
    tie_embeddings: bool = True,
) -> dict[str, dict[str, Any]]:
    """``lmbricks.nn.LMConfig`` mappings of the three arms with equal active FFN parameters.

    Args:
        hidden_size, num_layers, num_heads, num_kv_heads: the shared trunk.
        expert_intermediate: I, the width of a top-2 expert; the dense FFN and the Switch experts
            are 2I wide (dense width = top_k x expert width, Switch expert width = dense width).
        num_experts: E of both MoE arms.
        tie_embeddings: share the embedding with the output head (the head dominates at this size).

    Returns:
        ``{"dense": {...}, "top2": {...}, "switch": {...}}``, ready for a training config's ``model``.
    """
    trunk: dict[str, Any] = {
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads or num_heads,
        "tie_embeddings": tie_embeddings,
        "intermediate_size": 2 * expert_intermediate,
    }
    return {
        "dense": dict(trunk),
        "top2": {
            **trunk,
            "moe": {"num_experts": num_experts, "top_k": 2, "intermediate_size": expert_intermediate},
        },
        "switch": {
            **trunk,
            "moe": {
                "num_experts": num_experts,
                "top_k": 1,
                "router": "switch",
                "intermediate_size": 2 * expert_intermediate,
            },
        },
    }


def arm_train_config(
    model: dict[str, Any],
    tokenizer: str,
    steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    eval_every: int,
    max_tokens_per_domain: int | None = None,
    domains: Sequence[str] = DOMAINS,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``lmbricks train`` mapping of one arm (a checkpoint every ``eval_every`` steps, all kept).

    Returns:
        A dict that :func:`lmbricks.train.parse_config` validates (and that dumps as YAML).
    """
    return {
        "model": model,
        "tokenizer": tokenizer,
        "data": {"domains": list(domains), "seq_len": seq_len, "max_tokens": max_tokens_per_domain},
        "steps": steps,
        "batch_size": batch_size,
        "optim": {"lr": lr, "weight_decay": 0.1},
        "schedule": {"kind": "cosine", "warmup_steps": max(1, steps // 20), "min_lr_ratio": 0.1},
        "moe_loss": {"aux_loss_coef": 1e-2, "z_loss_coef": 1e-3},
        "precision": "fp32",
        "checkpoint_every": eval_every,
        "keep_checkpoints": steps // eval_every + 1,
        "seed": seed,
    }


def text_blocks(tokenizer: Any, domains: Sequence[str], split: str, seq_len: int, max_bytes: int) -> dict[str, Tensor]:
    """Packed (N, seq_len) token blocks per domain from the first ``max_bytes`` of a split."""
    from lmbricks.data import domain_text
    from lmbricks.data.tokens import token_chunks

    out = {}
    for d in domains:
        out[d] = token_chunks(tokenizer, [domain_text(d, split, max_bytes)], seq_len)  # (N, T)
    return out


def validation_blocks(
    tokenizer: Any, domains: Sequence[str], seq_len: int, blocks_per_domain: int
) -> dict[str, Tensor]:
    """The first ``blocks_per_domain`` packed blocks of each domain's validation split (N, seq_len)."""
    from lmbricks.data import load_texts
    from lmbricks.data.tokens import token_chunks

    return {
        d: token_chunks(tokenizer, load_texts(d, "validation"), seq_len, blocks_per_domain * seq_len) for d in domains
    }


@torch.no_grad()
def validation_losses(model: Any, blocks: dict[str, Tensor], batch_size: int = 8) -> dict[str, float]:
    """Mean next-token loss (nats) per domain, and ``"mean"`` over domains (eval mode).

    Args:
        model: an ``lmbricks.nn.LM``.
        blocks: ``{domain: (N, T) long}`` token blocks.
        batch_size: blocks per forward pass.

    Returns:
        ``{domain: loss, ..., "mean": mean of the domain losses}``.
    """
    from lmbricks.nn.model import lm_loss

    model.eval()
    out: dict[str, float] = {}
    for d, ids in blocks.items():
        total, n = 0.0, 0
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            total += float(lm_loss(model(chunk).logits, chunk)) * len(chunk)  # equal-length blocks
            n += len(chunk)
        out[d] = total / max(n, 1)
    out["mean"] = sum(out.values()) / max(len(out), 1)
    return out


@torch.no_grad()
def domain_expert_load(model: Any, blocks: dict[str, Tensor], batch_size: int = 8) -> dict[str, Any]:
    """Which experts each domain's tokens choose: the routed pairs the model's MoE layers report.

    The counts are those :mod:`lmbricks.trace` reads from the same outputs (``MoEAux``: pairs
    computed by each expert after capacity drops); the blocks have equal lengths, so no padding
    enters them.

    Args:
        model: an ``lmbricks.nn.LM`` with MoE layers.
        blocks: ``{domain: (N, T)}`` token blocks.
        batch_size: blocks per forward pass.

    Returns:
        ``{"layers": [...], "share": {domain: (L, E) pair shares}, "max_over_mean": per layer over all
        domains, "mutual_information_bits": I(domain; expert) per layer, "domain_entropy_bits": H(domain)}``.
    """
    model.eval()
    layers = [i for i, b in enumerate(model.layers) if getattr(b, "is_moe", False)]
    per_domain = []
    for ids in blocks.values():
        total = torch.zeros(len(layers), model.cfg.moe_config().num_experts, dtype=torch.long)  # (L, E)
        for start in range(0, len(ids), batch_size):
            aux = model(ids[start : start + batch_size]).aux
            total += torch.stack([a.tokens_per_expert.long().cpu() for a in aux])
        per_domain.append(total)
    counts = torch.stack(per_domain).double()  # (D, L, E)
    share = counts / counts.sum(-1, keepdim=True).clamp(min=1)
    return {
        "layers": layers,
        "share": {d: share[i].tolist() for i, d in enumerate(blocks)},
        "max_over_mean": [_max_over_mean(row) for row in counts.sum(0)],
        "mutual_information_bits": [mutual_information_bits(counts[:, i]) for i in range(counts.shape[1])],
        "domain_entropy_bits": _entropy_bits(counts[:, 0].sum(-1)),
    }


def _max_over_mean(row: Tensor) -> float:
    """The busiest expert's count over the mean count of one layer (1 = balanced; NaN when empty)."""
    return float(row.max() / row.mean()) if float(row.sum()) else float("nan")


def mutual_information_bits(counts: Tensor) -> float:
    """I(row; column) in bits of a (D, E) contingency table of counts (0 when empty)."""
    total = float(counts.sum())
    if total == 0:
        return 0.0
    p = counts.double() / total  # (D, E)
    outer = p.sum(1, keepdim=True) * p.sum(0, keepdim=True)
    nz = p > 0
    return float((p[nz] * (p[nz] / outer[nz]).log2()).sum())


def _entropy_bits(counts: Tensor) -> float:
    p = counts.double() / counts.sum().clamp(min=1)
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


def load_weights(path: Path) -> Any:
    """An ``lmbricks.nn.LM`` from a checkpoint directory, fp32, without loading its tokenizer.

    ``lmbricks.load_model`` also reads the tokenizer (about a second each time); scoring a run's
    checkpoints needs only the weights.
    """
    from lmbricks.checkpoint import CheckpointReader
    from lmbricks.nn.hf import load_hf_weights
    from lmbricks.nn.load import lm_config_of, read_config
    from lmbricks.nn.model import LM

    hf = read_config(path)
    cfg = lm_config_of(hf)
    with torch.device("meta"):
        model = LM(cfg)
    model.to_empty(device="cpu")
    with CheckpointReader(path) as reader:
        model.float()
        load_hf_weights(model, reader.get, set(reader.keys()), str(hf.get("model_type")))
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    return model.eval()


def run_arm(
    cfg: Any,
    run_dir: Path,
    val_blocks: dict[str, Tensor],
    chunks: Tensor | None = None,
    tokenizer: Any = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    keep_run: bool = True,
) -> dict[str, Any]:
    """Train one arm with ``lmbricks.train``, then score every checkpoint on the validation blocks.

    Args:
        cfg: a validated :class:`lmbricks.train.TrainConfig` (checkpoints are the evaluation points).
        run_dir: the run directory (overwritten).
        val_blocks: ``{domain: (N, T)}`` held-out blocks.
        chunks: pre-packed training blocks (default: built from ``cfg.data``).
        tokenizer: the tokenizer (default: ``cfg.tokenizer``).
        on_step: progress callback, as for :func:`lmbricks.train.train`.
        keep_run: keep the run directory (checkpoints, log); else delete it after scoring.

    Returns:
        A JSON-able dict: parameter counts, training wall time and tokens/s, the training-loss curve,
        the validation curve ``[[step, {domain: loss, "mean": loss}], ...]`` and, for MoE arms, the
        per-domain expert load of the final model.
    """
    start = time.perf_counter()
    result = train(cfg, run_dir, force=True, chunks=chunks, tokenizer=tokenizer, on_step=on_step, report=False)
    train_s = time.perf_counter() - start
    val_curve: list[list[Any]] = []
    model: Any = None
    for step, path in list_checkpoints(run_dir):
        model = load_weights(path)
        val_curve.append([step, validation_losses(model, val_blocks)])
    assert model is not None, f"{run_dir}: training left no checkpoint"
    params = count_parameters(model.cfg).to_dict()
    rates = [r["tokens_per_s"] for r in result.records[1:]] or [r["tokens_per_s"] for r in result.records]
    out: dict[str, Any] = {
        "params": params,
        "train_seconds": round(train_s, 2),
        "tokens": result.records[-1]["tokens"] if result.records else 0,
        "tokens_per_s": sorted(rates)[len(rates) // 2] if rates else 0.0,
        "train_curve": [[r["step"], r["loss"]] for r in result.records],
        "val_curve": val_curve,
    }
    if model.cfg.moe is not None:
        out["expert_load"] = domain_expert_load(model, val_blocks)
        out["train_load_max_over_mean"] = result.records[-1].get("expert_load_max_over_mean")
    if not keep_run:
        shutil.rmtree(run_dir, ignore_errors=True)
    return out
