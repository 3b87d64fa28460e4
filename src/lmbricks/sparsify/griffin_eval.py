"""``lmbricks sparsify griffin``: GRIFFIN's quality and decoding speed on a model, against dense.

Quality as GRIFFIN evaluates it (a prompt, then what follows it): each window of held-out text is
a prompt of ``prompt_tokens`` run dense (the statistic is collected), then a continuation of
``continuation_tokens`` scored with teacher forcing through the restricted FFNs, continuing the
prompt's KV cache. The perplexity change of an arm is ``exp(mean NLL_arm - mean NLL_dense) - 1``
over a domain's continuation tokens; the dense arm scores the same tokens after the same prompt.
Speed: greedy decoding after the first prompt (tokens per second of process CPU time, median of
the steps over ``rounds`` rounds whose arm order rotates), and one FFN alone on one token.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.nn.model import LM, KVCache
from lmbricks.sparsify.griffin import Griffin, griffin_select

#: progress(windows done, windows in all).
Progress = Callable[[int, int], None]


class GriffinEvalConfig(BaseModel):
    """What ``sparsify griffin`` measures.

    Attributes:
        model: lmbricks' LM directory or registry name (Llama, Mistral, Qwen2 families).
        out: the output directory (``results.json``, ``lmbricks.json``).
        keep: fractions of each FFN's neurons kept, each in (0, 1].
        domains: lmbricks.data corpora whose ``split`` gives the windows.
        text_files: UTF-8 files to read the windows from instead of ``domains`` (named by their stem).
        split: the corpus split read.
        sequences: windows (prompt + continuation) per domain.
        prompt_tokens: tokens of each prompt (run dense; the selection reads them).
        continuation_tokens: held-out tokens scored after each prompt.
        decode_tokens: greedy tokens per arm and round in the speed measurement (0: none).
        rounds: speed rounds (the arms' order rotates each round).
        precision: bf16 weights (auto: where the CPU has them) or fp32.
        threads: torch intra-op threads while measuring.
        force: replace an ``out`` this command wrote.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    out: Path
    keep: list[float] = Field(default_factory=lambda: [0.5, 0.25], min_length=1)
    domains: list[str] = Field(default_factory=lambda: ["en_prose", "code", "math", "zh", "dialogue"], min_length=1)
    text_files: list[Path] = Field(default_factory=list)
    split: str = Field("test", pattern="^(train|validation|test)$")
    sequences: int = Field(4, gt=0)
    prompt_tokens: int = Field(512, gt=0)
    continuation_tokens: int = Field(128, gt=1)
    decode_tokens: int = Field(32, ge=0)
    rounds: int = Field(3, gt=0)
    precision: str = Field("auto", pattern="^(auto|fp32|bf16)$")
    threads: int | None = Field(1, gt=0)
    force: bool = False

    @field_validator("keep")
    @classmethod
    def _fractions(cls, keep: list[float]) -> list[float]:
        for k in keep:
            griffin_select(torch.ones(1), k)  # ConfigError naming keep
        return keep


@dataclass
class GriffinEval:
    """What :func:`run_griffin_eval` returns (every figure of ``results.json``).

    Attributes:
        settings: the validated config (JSON-ready) and the resolved precision.
        nll: domain -> arm ("dense", "keep=0.5", ...) -> mean NLL (nats) of the continuation tokens.
        ppl_change: arm -> domain (and "mean", the mean over domains) -> relative perplexity change.
        scored_tokens: continuation tokens scored per domain.
        decode_tok_s: arm -> whole-model greedy decoding tokens per CPU second (median step).
        ffn_decode_ms: arm -> one FFN (the middle layer) on one token, CPU milliseconds (median).
        prune_ms: arm -> CPU milliseconds of the selection and restriction, once per sequence.
        cpu_s: process CPU seconds of the whole measurement.
    """

    settings: dict[str, Any]
    nll: dict[str, dict[str, float]]
    ppl_change: dict[str, dict[str, float]]
    scored_tokens: dict[str, int]
    decode_tok_s: dict[str, float]
    ffn_decode_ms: dict[str, float]
    prune_ms: dict[str, float]
    cpu_s: float


def arm_name(keep: float | None) -> str:
    """``dense`` or ``keep=<fraction>``, the key of an arm in the results."""
    return "dense" if keep is None else f"keep={keep:g}"


def windows(ids: Tensor, length: int, count: int) -> list[Tensor]:
    """Up to ``count`` consecutive non-overlapping windows of ``length`` tokens of ``ids`` (N,)."""
    return [ids[i * length : (i + 1) * length] for i in range(min(count, ids.numel() // length))]


def _forked(cache: KVCache) -> KVCache:
    """A cache that continues ``cache`` without changing it (its update concatenates into new tensors)."""
    out = KVCache(len(cache.keys))
    out.keys, out.values = list(cache.keys), list(cache.values)
    return out


@torch.no_grad()
def continuation_nll(model: LM, window: Tensor, prompt_tokens: int, keeps: list[float]) -> dict[str, float]:
    """Summed NLL of the window's continuation after its dense prompt, per arm.

    Args:
        model: lmbricks' LM.
        window: (P + C,) token ids; the first ``prompt_tokens`` are the prompt.
        prompt_tokens: P.
        keeps: the GRIFFIN fractions (the dense arm is always scored).

    Returns:
        arm -> sum over the C continuation tokens of -log p(token | everything before it).
    """
    prompt, cont = window[None, :prompt_tokens], window[None, prompt_tokens:]  # (1, P), (1, C)
    cache = KVCache(model.cfg.num_layers)
    out: dict[str, float] = {}
    with Griffin(model) as g:
        last = model(prompt, cache=cache).logits[:, -1:]  # (1, 1, V) predicts the first continuation token
        for keep in [None, *keeps]:
            if keep is not None:
                g.prune(keep)
            logits = torch.cat([last, model(cont[:, :-1], cache=_forked(cache)).logits], dim=1)  # (1, C, V)
            scores = logits[0].to(torch.promote_types(logits.dtype, torch.float32))  # bf16 logits scored in fp32
            out[arm_name(keep)] = float(F.cross_entropy(scores, cont[0], reduction="sum"))
            g.restore()
    return out


@torch.no_grad()
def _decode_steps(model: LM, prompt: Tensor, steps: int, keep: float | None) -> tuple[list[float], float]:
    """CPU seconds of each greedy decoding step after a dense ``prompt`` (1, P), FFNs restricted if
    keep, and of the selection and restriction itself (0 for dense)."""
    cache = KVCache(model.cfg.num_layers)
    times: list[float] = []
    with Griffin(model) as g:
        nxt = model(prompt, cache=cache).logits[:, -1:].argmax(-1)  # (1, 1)
        c = time.process_time()
        if keep is not None:
            g.prune(keep)
        prune_s = time.process_time() - c if keep is not None else 0.0
        for _ in range(steps):
            c = time.process_time()
            nxt = model(nxt, cache=cache).logits[:, -1:].argmax(-1)
            times.append(time.process_time() - c)
    return times, prune_s


@torch.no_grad()
def _ffn_step(model: LM, prompt: Tensor, keep: float | None, calls: int) -> list[float]:
    """CPU seconds of the middle FFN (dense, or restricted by the prompt's selection) on single tokens."""
    captured: list[Tensor] = []
    with Griffin(model) as g:
        site = g.sites[len(g.sites) // 2]
        handle = site.module.register_forward_pre_hook(lambda _m, a: captured.append(a[0][0]))
        model(prompt)
        handle.remove()
        if keep is not None:
            g.prune(keep)
        ffn: nn.Module = getattr(site.parent, site.attr)
        xs = captured[0][:calls, None]  # (calls, 1, H): the prompt's FFN inputs, one token at a time
        times = []
        for x in xs:
            c = time.process_time()
            ffn(x)
            times.append(time.process_time() - c)
    return times


def speed(model: LM, prompt: Tensor, keeps: list[float], steps: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per arm, medians in process CPU time: decoding tokens/s of the whole model, one-token FFN
    milliseconds, and the milliseconds of the selection and restriction after the prompt.

    Returns:
        ``{"decode_tok_s": {arm: v}, "ffn_decode_ms": {...}, "prune_ms": {...}}``; empty dicts when ``steps`` is 0.
    """
    keys = ("decode_tok_s", "ffn_decode_ms", "prune_ms")
    if steps == 0:
        return {k: {} for k in keys}
    arms: list[float | None] = [None, *keeps]
    times: dict[str, dict[str, list[float]]] = {k: {arm_name(a): [] for a in arms} for k in keys}
    for r in range(rounds):
        for keep in arms[r % len(arms) :] + arms[: r % len(arms)]:
            steps_s, prune_s = _decode_steps(model, prompt, steps, keep)
            times["decode_tok_s"][arm_name(keep)] += steps_s
            times["prune_ms"][arm_name(keep)].append(prune_s)
            times["ffn_decode_ms"][arm_name(keep)] += _ffn_step(model, prompt, keep, 4 * steps)
    out = {k: {a: statistics.median(t) for a, t in v.items()} for k, v in times.items()}
    out["decode_tok_s"] = {a: 1.0 / max(1e-9, t) for a, t in out["decode_tok_s"].items()}
    out["ffn_decode_ms"] = {a: 1e3 * t for a, t in out["ffn_decode_ms"].items()}
    out["prune_ms"] = {a: 1e3 * t for a, t in out["prune_ms"].items()}
    return out


def _load(cfg: GriffinEvalConfig) -> tuple[LM, Any, str]:
    from lmbricks.nn.load import load_model
    from lmbricks.runtime.precision import inference_dtype, resolve_precision

    resolved = resolve_precision(cfg.precision, "cpu")
    model, tok = load_model(cfg.model, dtype=inference_dtype(resolved), hf_fallback=False)
    if not isinstance(model, LM):
        raise ConfigError(f"model: {cfg.model} does not load as lmbricks' LM (Llama, Mistral, Qwen2 families)")
    return model.eval(), tok, resolved


def _texts(cfg: GriffinEvalConfig) -> dict[str, str]:
    """name -> held-out text: each domain's split, or the start of each text file."""
    from lmbricks.data.corpus import domain_text

    budget = 8 * (cfg.prompt_tokens + cfg.continuation_tokens) * cfg.sequences  # bytes; ~2-4 per token
    if cfg.text_files:
        return {p.stem: _read(p)[:budget] for p in cfg.text_files}
    return {d: domain_text(d, cfg.split, max_bytes=budget) for d in cfg.domains}


def _read(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"text_files: {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"text_files: {path}: cannot read as UTF-8 text ({exc})") from None


def _windows(cfg: GriffinEvalConfig, texts: dict[str, str], tok: Any) -> dict[str, list[Tensor]]:
    length = cfg.prompt_tokens + cfg.continuation_tokens
    out = {}
    for name, text in texts.items():
        found = windows(torch.tensor(tok.encode(text), dtype=torch.long), length, cfg.sequences)
        if not found:
            raise ConfigError(f"{name!r} has fewer than {length} tokens (prompt_tokens + continuation_tokens)")
        out[name] = found
    return out


def run_griffin_eval(cfg: GriffinEvalConfig, progress: Progress | None = None) -> GriffinEval:
    """Measure GRIFFIN on ``cfg.model`` (quality per domain, decoding speed) and write ``cfg.out``.

    Args:
        cfg: the validated settings.
        progress: called with (windows scored, windows in all).

    Returns:
        A :class:`GriffinEval`; ``cfg.out`` holds it as ``results.json``.

    Raises:
        ConfigError: a refused output (checked before the model loads), a model that is not an
            lmbricks LM with dense gated FFNs, a domain too short for one window.
    """
    from lmbricks.checkpoint import check_output

    check_output(cfg.out, {"model": cfg.model}, cfg.force)
    c0 = time.process_time()
    prev = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or prev)
    try:
        texts = _texts(cfg)
        model, tok, precision = _load(cfg)
        wins = _windows(cfg, texts, tok)
        total, done = sum(len(w) for w in wins.values()), 0
        sums: dict[str, dict[str, float]] = {}
        for d, ws in wins.items():
            sums[d] = {}
            for w in ws:
                for arm, v in continuation_nll(model, w, cfg.prompt_tokens, cfg.keep).items():
                    sums[d][arm] = sums[d].get(arm, 0.0) + v
                done += 1
                if progress is not None:
                    progress(done, total)
        first = next(iter(wins.values()))[0][None, : cfg.prompt_tokens]
        timed = speed(model, first, cfg.keep, cfg.decode_tokens, cfg.rounds)
    finally:
        torch.set_num_threads(prev)
    scored = {d: len(ws) * cfg.continuation_tokens for d, ws in wins.items()}
    nll = {d: {a: v / scored[d] for a, v in arms.items()} for d, arms in sums.items()}
    settings = {**json.loads(cfg.model_dump_json()), "precision_resolved": precision}
    result = GriffinEval(settings, nll, _changes(nll, cfg.keep), scored, cpu_s=time.process_time() - c0, **timed)
    _write(result, cfg)
    return result


def _changes(nll: dict[str, dict[str, float]], keeps: list[float]) -> dict[str, dict[str, float]]:
    """arm -> domain -> exp(NLL_arm - NLL_dense) - 1, plus the mean over domains."""
    out = {}
    for keep in keeps:
        arm = arm_name(keep)
        per = {d: math.exp(v[arm] - v["dense"]) - 1.0 for d, v in nll.items()}
        out[arm] = {**per, "mean": sum(per.values()) / len(per)}
    return out


def _write(result: GriffinEval, cfg: GriffinEvalConfig) -> None:
    from lmbricks.checkpoint import atomic_directory
    from lmbricks.checkpoint.provenance import write_provenance

    with atomic_directory(cfg.out, force=cfg.force, inputs={"model": cfg.model}) as tmp:
        (tmp / "results.json").write_text(json.dumps(asdict(result), indent=2, default=str) + "\n")
        write_provenance(tmp, command="sparsify griffin", recipe=result.settings, inputs={})
