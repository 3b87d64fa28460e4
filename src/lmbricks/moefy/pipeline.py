"""The MoEfication pipeline: convert, heal, save, evaluate (what ``lmbricks moefy`` runs).

A typed config in (:class:`MoefyRun`, validated by :mod:`lmbricks.config`) and a typed result out
(:class:`MoefyOutcome`); the CLI parses arguments into the config, calls :func:`run_moefy` and
prints the result. :func:`cached_moefied` and :func:`measure_moefied` are the tour's two calls:
build (or reuse) a MoEfied model, then its perplexity change and FFN speedup at a few K.

Example:
    >>> from lmbricks.moefy.pipeline import MoefyRun, run_moefy  # doctest: +SKIP
    >>> run = MoefyRun.of(model="smollm2-135m-instruct", out="runs/smol-moe", evaluate=True)  # doctest: +SKIP
    >>> outcome = run_moefy(run)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from lmbricks.analysis.corpus import FULL_BUDGET, QUICK_BUDGET, domain_chunks, relative_change
from lmbricks.analysis.ffn import find_ffns
from lmbricks.checkpoint import check_output
from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.hub import load_hf_model, reference_paths, resolve_model
from lmbricks.moefy.config import MoefyConfig
from lmbricks.moefy.convert import MoefyInfo, check_moefiable, moefied_layers, moefy_model
from lmbricks.moefy.evaluate import DenseFFN, MoefyEval, ppl_curve, time_ffn, time_model
from lmbricks.moefy.heal import HealConfig, HealStats, heal
from lmbricks.moefy.io import densify, is_moefied, load_moefied, read_section, save_moefied
from lmbricks.moefy.reporting import write_moefy_report
from lmbricks.moefy.routers import MOEFY_ROUTERS
from lmbricks.nn.load import read_config
from lmbricks.runtime import resolve_precision

Texts = Callable[[str, str], list[str]]
#: Healing blocks per domain and their length in tokens (train split).
HEAL_BLOCKS = (64, 256)
#: Mass-share thresholds of the dynamic-K points, for routers whose softmax is a predicted share.
DYNAMIC_THRESHOLDS = (0.7, 0.9)


class MoefyRun(BaseModel):
    """One ``lmbricks moefy`` run.

    Attributes:
        model: the dense model (registry name or directory); with ``densify`` a MoEfied directory.
        out: the output directory.
        moefy: experts, top-K, split, router and calibration (:class:`MoefyConfig`).
        heal_minutes: healing budget in minutes (0: none).
        heal_tokens: healing budget in tokens (None or 0: none).
        heal_routers_only: heal the routers and freeze the experts.
        precision: healing's forwards under bf16 autocast where ``auto`` resolves to bf16
            (:func:`lmbricks.runtime.resolve_precision`); ``fp32`` reproduces fp32 healing.
        evaluate: evaluate the result and write a report.
        quick: evaluate on 4 x 256 tokens per domain (else 4 x 1024).
        report: the report directory (None: ``OUT-report``); it must lie apart from ``out``.
        densify: restore the dense model of the MoEfied ``model`` into ``out`` instead.
        force: replace earlier outputs that lmbricks wrote.
        command: recorded in the output's lmbricks.json.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    out: Path
    moefy: MoefyConfig = Field(default_factory=lambda: MoefyConfig.model_validate({}))
    heal_minutes: float = Field(0.0, ge=0)
    heal_tokens: int | None = Field(None, ge=0)
    heal_routers_only: bool = False
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    evaluate: bool = False
    quick: bool = False
    report: Path | None = None
    densify: bool = False
    force: bool = False
    command: str = "lmbricks.moefy.pipeline.run_moefy"

    @model_validator(mode="after")
    def _report_apart(self) -> MoefyRun:
        if self.evaluate:
            o, r = self.out.expanduser().absolute(), self.report_dir.expanduser().absolute()
            if o == r or o in r.parents or r in o.parents:
                raise ValueError(f"report {self.report_dir}: the report directory must lie apart from out {self.out}")
        return self

    @property
    def report_dir(self) -> Path:
        """Where the evaluation report goes (``OUT-report`` unless set)."""
        return self.report or self.out.with_name(self.out.name + "-report")

    @property
    def heals(self) -> bool:
        """Whether a healing budget is set."""
        return self.heal_minutes > 0 or bool(self.heal_tokens)

    @classmethod
    def of(cls, source: str = "moefy options", **fields: Any) -> MoefyRun:
        """Validate keyword arguments (a ``moefy`` mapping of MoefyConfig fields included).

        Raises:
            ConfigError: one line naming the field, e.g. ``moefy options: moefy.split: ...``.
        """
        from lmbricks.config import validate

        return validate(cls, fields, source, what="moefy run")


@dataclass
class MoefyOutcome:
    """What :func:`run_moefy` did.

    Attributes:
        path: the written model directory (MoEfied, or dense with ``densify``).
        info: the conversion's per-layer statistics (None with ``densify``).
        healed: the healing statistics (None without a budget).
        evaluation: the perplexity curve and timings (None without ``evaluate``).
        report: the report's report.html (None without ``evaluate``).
    """

    path: Path
    info: MoefyInfo | None = None
    healed: HealStats | None = None
    evaluation: MoefyEval | None = None
    report: Path | None = None

    @property
    def oracle_share(self) -> float | None:
        """Mean share of the calibration mass held by the top-K experts, over layers."""
        shares = self.info.oracle_share if self.info is not None else []
        return sum(shares) / len(shares) if shares else None


def run_moefy(
    run: MoefyRun,
    on_step: Callable[[str], None] | None = None,
    on_heal: Callable[[HealStats], None] | None = None,
    texts_of: Texts | None = None,
) -> MoefyOutcome:
    """Convert (or densify), heal, save and evaluate, checking every output before any work.

    Args:
        run: the settings.
        on_step: progress callback, one description per step.
        on_heal: called after every healing step with the running statistics.
        texts_of: ``(domain, split) -> documents`` replacing the corpora (tests).

    Returns:
        The :class:`MoefyOutcome`.

    Raises:
        ConfigError: unsupported architecture, E not dividing the width, or an output in the way.
    """
    step = on_step or (lambda _msg: None)
    check_output(run.out, reference_paths(run.model), run.force)  # before any fetch or load
    if run.densify:
        return MoefyOutcome(densify(resolve_model(run.model), run.out, force=run.force))
    if run.evaluate:
        check_output(run.report_dir, reference_paths(run.model), run.force)
    src = resolve_model(run.model)
    check_moefiable(read_config(src), run.moefy)  # before any work
    lm, tokenizer = load_hf_model(src)
    info = moefy_model(lm, tokenizer, run.moefy, texts_of=texts_of, on_step=step)
    healed = _heal(lm, src, tokenizer, run, on_heal, texts_of) if run.heals else None
    path = save_moefied(lm, run.out, run.moefy, info.permutations, source=src, tokenizer=tokenizer,
                        force=run.force, command=run.command)  # fmt: skip
    outcome = MoefyOutcome(path, info, healed)
    if run.evaluate:
        outcome.evaluation = evaluate_moefied(lm, src, tokenizer, run.moefy, run.quick, step, texts_of)
        settings = {k: getattr(run.moefy, k) for k in ("experts", "shared_experts", "top_k", "split", "router")}
        outcome.report = write_moefy_report(outcome.evaluation, run.report_dir, f"MoEfication of {run.model}",
                                            settings, force=run.force, inputs=[src, run.out])  # fmt: skip
    return outcome


def _heal(
    lm: nn.Module,
    src: Path,
    tokenizer: Any,
    run: MoefyRun,
    on_heal: Callable[[HealStats], None] | None,
    texts_of: Texts | None,
) -> HealStats:
    """Distil ``lm`` towards a fresh copy of the dense source on shuffled train blocks of every domain."""
    teacher, _ = load_hf_model(src)
    config = HealConfig(
        max_tokens=run.heal_tokens or None,
        max_minutes=run.heal_minutes or None,
        train_experts=not run.heal_routers_only,
        precision=resolve_precision(run.precision, "cpu"),
    )
    chunks = domain_chunks(tokenizer, DEFAULT_DOMAINS, "train", *HEAL_BLOCKS, texts_of)
    blocks = torch.cat(list(chunks.values()))  # (N, T)
    return heal(lm, teacher, blocks[torch.randperm(blocks.shape[0])], config, on_step=on_heal)


def curve_ks(config: MoefyConfig) -> list[int]:
    """The K of the evaluation curve: E/8, E/4, E/2, 3E/4 and top-K, below E (K = E is the dense baseline).

    With S shared experts E is the routed count ``E - S`` (a token then runs ``S + K`` experts).
    """
    e = config.experts - config.shared_experts
    ks = sorted({k for k in (e // 8, e // 4, e // 2, 3 * e // 4, config.top_k) if 0 < k < e})
    return ks or [e]


def evaluate_moefied(
    lm: nn.Module,
    src: Path,
    tokenizer: Any,
    config: MoefyConfig,
    quick: bool = False,
    on_step: Callable[[str], None] | None = None,
    texts_of: Texts | None = None,
) -> MoefyEval:
    """Perplexity versus experts used (oracle, router, dynamic K) and FFN and model timings.

    Args:
        lm: the MoEfied model.
        src: the dense source directory (the timing baseline).
        tokenizer: the tokenizer.
        config: the MoEfication settings (experts, top-K, router).
        quick: 4 x 256 tokens per domain instead of 4 x 1024.
        on_step: progress callback.
        texts_of: replaces the corpora (tests).

    Returns:
        The :class:`MoefyEval`, timings filled in.
    """
    step = on_step or (lambda _msg: None)
    n, t = QUICK_BUDGET if quick else FULL_BUDGET
    evals = domain_chunks(tokenizer, DEFAULT_DOMAINS, "test", n, t, texts_of)
    dynamic = DYNAMIC_THRESHOLDS if MOEFY_ROUTERS[config.router].predicts_share else ()
    result = ppl_curve(lm, evals, curve_ks(config), ("oracle", "router"), dynamic, on_step=step)
    step("timing")
    dense, _ = load_hf_model(src)
    block = find_ffns(dense)[0]
    ffn = moefied_layers(lm)[0]
    e = config.experts - config.shared_experts  # routed experts
    timing_ks = sorted({max(1, e // 4), max(1, e // 2), e})
    for tokens, name in ((1024, "ffn_prefill"), (1, "ffn_decode")):
        for key, value in time_ffn(block.module, ffn, block.hidden, timing_ks, tokens).items():
            result.timings[f"{name}_{key}"] = value
    result.timings.update(time_model(dense, lm, timing_ks, rounds=3))
    return result


# -- the tour's calls -------------------------------------------------------------------------------


def cached_moefied(
    model_path: Path,
    cache: Path,
    config: MoefyConfig,
    texts_of: Texts | None = None,
    on_step: Callable[[str], None] | None = None,
    command: str = "lmbricks.moefy.pipeline.cached_moefied",
) -> tuple[nn.Module, Any, bool]:
    """The MoEfied model in ``cache`` if it was made with ``config``, else a new one saved there.

    Args:
        model_path: the dense source directory.
        cache: the cache directory (replaced when its settings differ).
        config: the MoEfication settings.
        texts_of: replaces the calibration corpora (tests).
        on_step: progress callback.
        command: recorded in the cache's lmbricks.json.

    Returns:
        ``(model, tokenizer, built)``: ``built`` is False when the cached model was loaded.
    """
    if is_moefied(cache) and _stored_settings(cache) == config:
        model, tokenizer = load_moefied(cache)
        return model, tokenizer, False
    model, tokenizer = load_hf_model(model_path)
    info = moefy_model(model, tokenizer, config, texts_of=texts_of, on_step=on_step)
    save_moefied(model, cache, config, info.permutations, source=model_path, tokenizer=tokenizer, force=True,
                 command=command)  # fmt: skip
    return model, tokenizer, True


@dataclass
class MoefyMeasures:
    """Perplexity change and FFN speed of a MoEfied model at a few K (changes: 0.10 = +10%).

    Attributes:
        dense_ppl: ``{domain: perplexity}`` of the dense model.
        router_change: ``{K: {domain: change}}`` with the router choosing K experts.
        router_mean: ``{K: mean change over the domains}``.
        oracle_k: the K of the oracle point.
        oracle_change: ``{domain: change}`` with the oracle's K experts.
        oracle_mean: its mean over the domains.
        ffn_speedup: ``{K: dense FFN time / sparse FFN time}`` (K = E included).
        ffn_dense_ms: the dense FFN's median time.
        timed_layer: the layer whose FFN was timed.
        neurons: the FFN width I; ``expert_size``: neurons per expert.
    """

    dense_ppl: dict[str, float]
    router_change: dict[int, dict[str, float]]
    router_mean: dict[int, float]
    oracle_k: int
    oracle_change: dict[str, float]
    oracle_mean: float
    ffn_speedup: dict[int, float]
    ffn_dense_ms: float
    timed_layer: int
    neurons: int
    expert_size: int


def measure_moefied(
    model: nn.Module,
    evals: Mapping[str, torch.Tensor],
    ks: Sequence[int],
    oracle_k: int,
    tokens: int = 256,
    rounds: int = 10,
    on_step: Callable[[str], None] | None = None,
) -> MoefyMeasures:
    """Router perplexity at each K, the oracle at ``oracle_k``, and the middle layer's FFN speedup.

    Args:
        model: a MoEfied model.
        evals: ``{domain: (N, T) token blocks}``.
        ks: experts per token of the router points.
        oracle_k: experts per token of the oracle point.
        tokens: rows of the FFN timing.
        rounds: timing rounds.
        on_step: progress callback.

    Returns:
        The :class:`MoefyMeasures`.
    """
    result = ppl_curve(model, evals, ks, ("router",), on_step=on_step)
    oracle = ppl_curve(model, evals, [oracle_k], ("oracle",)).find("oracle", oracle_k)
    assert oracle is not None
    layers = moefied_layers(model)
    middle = len(layers) // 2
    ffn = layers[middle]
    timed = [*ks, ffn.num_experts]
    timing = time_ffn(DenseFFN.of(ffn), ffn, ffn.hidden_size, timed, tokens=tokens, rounds=rounds)
    dense = result.dense_ppl
    return MoefyMeasures(
        dense_ppl=dense,
        router_change={p.top_k or 0: relative_change(p.ppl, dense) for p in result.points},
        router_mean={p.top_k or 0: result.change(p) for p in result.points},
        oracle_k=oracle_k,
        oracle_change=relative_change(oracle.ppl, dense),
        oracle_mean=result.change(oracle),
        ffn_speedup={k: timing[f"K={k}_speedup"] for k in timed},
        ffn_dense_ms=timing["dense_ms"],
        timed_layer=middle,
        neurons=ffn.num_experts * ffn.expert_size,
        expert_size=ffn.expert_size,
    )


def _stored_settings(cache: Path) -> MoefyConfig | None:
    """The MoefyConfig a MoEfied directory was made with (fields added since take their defaults); None if invalid."""
    try:
        return MoefyConfig(**read_section(cache).get("moefy", {}))
    except (TypeError, ValueError):
        return None
