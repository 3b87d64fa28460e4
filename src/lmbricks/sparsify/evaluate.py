"""``lmbricks sparsify evaluate``: a training-free method's quality and decoding speed, against dense.

Quality as GRIFFIN evaluates it (a prompt, then what follows it): each window of held-out text is
a prompt of ``prompt_tokens``, then a continuation of ``continuation_tokens`` scored with teacher
forcing, continuing the prompt's KV cache. GRIFFIN runs the prompt dense (its statistic is
collected) and the continuation through the restricted FFNs; CATS thresholds both (thresholds
calibrated on ``calibration_tokens`` of each domain's train split). The perplexity change of an arm
is ``exp(mean NLL_arm - mean NLL_dense) - 1`` over a domain's continuation tokens; the dense arm
scores the same tokens after the same prompt. Speed: greedy decoding after the first prompt
(tokens per second of process CPU time, median of the steps over ``rounds`` rounds whose arm order
rotates), and one FFN alone on one token (:mod:`lmbricks.sparsify.arms`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.nn.model import LM
from lmbricks.sparsify.arms import Method, MethodName, arm_name, continuation_nll, speed
from lmbricks.sparsify.cats import calibrate
from lmbricks.sparsify.griffin import griffin_select
from lmbricks.sparsify.teal import calibrate_teal

#: progress(windows done, windows in all).
Progress = Callable[[int, int], None]


class SparsifyEvalConfig(BaseModel):
    """What ``sparsify evaluate`` measures.

    Attributes:
        model: lmbricks' LM directory or registry name (Llama, Mistral, Qwen2 families).
        out: the output directory (``results.json``, ``lmbricks.json``).
        method: "griffin" (per-prompt FFN neuron selection), "cats" (thresholded gate activation),
            "cmoe" (carved experts) or "teal" (thresholded inputs of every projection, arXiv 2408.14690).
        keep: fractions of each FFN's neurons kept (GRIFFIN), of gate activations not zeroed
            (CATS: sparsity 1 - keep), of experts used (CMoE) or of each projection's input entries
            not zeroed (TEAL: sparsity 1 - keep), each in (0, 1].
        calibration_tokens: CATS, CMoE and TEAL: train-split tokens per domain (or from the start
            of each text file) the thresholds or the carving are chosen on.
        experts: CMoE: experts per FFN (must divide its width).
        shared_experts: CMoE: how many of them are shared (always on); a kept fraction f routes
            ``round(f * experts) - shared_experts`` experts per token.
        markers: CMoE: neurons each calibration token marks (default: an eighth of the width).
        oracle: CMoE: route by the experts' true mass (a bound on the carving) instead of the router.
        router: CMoE: "analytic" (the representative neurons) or "linear" (``moefy``'s ridge fit).
        allocation: TEAL: "uniform" (the same sparsity at every site) or "greedy" (TEAL's
            block-wise greedy search, :mod:`lmbricks.sparsify.teal_greedy`, at the same mean sparsity).
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
    method: MethodName = "griffin"
    calibration_tokens: int = Field(2048, gt=0)
    experts: int = Field(32, gt=1)
    shared_experts: int = Field(4, ge=0)
    markers: int | None = Field(None, gt=0)
    oracle: bool = False
    router: str = Field("analytic", pattern="^(analytic|linear)$")
    allocation: str = Field("uniform", pattern="^(uniform|greedy)$")
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

    @model_validator(mode="after")
    def _cmoe_counts(self) -> SparsifyEvalConfig:
        if self.method == "cmoe":
            if self.shared_experts >= self.experts:
                raise ConfigError(f"shared_experts: fewer than experts ({self.experts}), got {self.shared_experts}")
            for k in self.keep:
                if round(k * self.experts) < self.shared_experts:
                    raise ConfigError(
                        f"keep: {k} of {self.experts} experts is fewer than the {self.shared_experts} shared ones"
                    )
        return self


@dataclass
class SparsifyEval:
    """What :func:`run_sparsify_eval` returns (every figure of ``results.json``).

    Attributes:
        settings: the validated config (JSON-ready) and the resolved precision.
        nll: domain -> arm ("dense", "keep=0.5", ...) -> mean NLL (nats) of the continuation tokens.
        ppl_change: arm -> domain (and "mean", the mean over domains) -> relative perplexity change.
        scored_tokens: continuation tokens scored per domain.
        decode_tok_s: arm -> whole-model greedy decoding tokens per CPU second (median step).
        ffn_decode_ms: arm -> one FFN (the middle layer) on one token, CPU milliseconds (median).
        prune_ms: arm -> CPU milliseconds of the selection and restriction, once per sequence
            (GRIFFIN; next to nothing for CATS and dense).
        thresholds: CATS: arm -> the per-FFN thresholds; TEAL: arm -> the per-site thresholds (4 per
            block: attention input, ``o`` input, FFN input, ``down`` input); empty for GRIFFIN and CMoE.
        cpu_s: process CPU seconds of the whole measurement.
    """

    settings: dict[str, Any]
    nll: dict[str, dict[str, float]]
    ppl_change: dict[str, dict[str, float]]
    scored_tokens: dict[str, int]
    decode_tok_s: dict[str, float]
    ffn_decode_ms: dict[str, float]
    prune_ms: dict[str, float]
    thresholds: dict[str, list[float]]
    cpu_s: float


def windows(ids: Tensor, length: int, count: int) -> list[Tensor]:
    """Up to ``count`` consecutive non-overlapping windows of ``length`` tokens of ``ids`` (N,)."""
    return [ids[i * length : (i + 1) * length] for i in range(min(count, ids.numel() // length))]


def _load(cfg: SparsifyEvalConfig) -> tuple[LM, Any, str]:
    from lmbricks.nn.load import load_model
    from lmbricks.runtime.precision import inference_dtype, resolve_precision

    resolved = resolve_precision(cfg.precision, "cpu")
    model, tok = load_model(cfg.model, dtype=inference_dtype(resolved), hf_fallback=False)
    if not isinstance(model, LM):
        raise ConfigError(f"model: {cfg.model} does not load as lmbricks' LM (Llama, Mistral, Qwen2 families)")
    return model.eval(), tok, resolved


def _texts(cfg: SparsifyEvalConfig) -> dict[str, str]:
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


def _windows(cfg: SparsifyEvalConfig, texts: dict[str, str], tok: Any) -> dict[str, list[Tensor]]:
    length = cfg.prompt_tokens + cfg.continuation_tokens
    out = {}
    for name, text in texts.items():
        found = windows(torch.tensor(tok.encode(text), dtype=torch.long), length, cfg.sequences)
        if not found:
            raise ConfigError(f"{name!r} has fewer than {length} tokens (prompt_tokens + continuation_tokens)")
        out[name] = found
    return out


def run_sparsify_eval(cfg: SparsifyEvalConfig, progress: Progress | None = None) -> SparsifyEval:
    """Measure GRIFFIN, CATS, CMoE or TEAL on ``cfg.model`` (quality per domain, decoding speed) and write ``cfg.out``.

    Args:
        cfg: the validated settings.
        progress: called with (windows scored, windows in all).

    Returns:
        A :class:`SparsifyEval`; ``cfg.out`` holds it as ``results.json``.

    Raises:
        ConfigError: a refused output (checked before the model loads), a model that is not an
            lmbricks LM with dense gated FFNs, a domain too short for one window.
    """
    from lmbricks.checkpoint import check_output

    check_output(cfg.out, {"model": cfg.model}, cfg.force)
    c0 = time.process_time()
    with _threads(cfg.threads):
        texts = _texts(cfg)
        model, tok, precision = _load(cfg)
        wins = _windows(cfg, texts, tok)
        method = _method(cfg, model, tok)
        nll, scored = _quality(cfg, model, wins, method, progress)
        first = next(iter(wins.values()))[0][None, : cfg.prompt_tokens]
        timed = speed(model, first, cfg.keep, method, cfg.decode_tokens, cfg.rounds)
    settings = {**json.loads(cfg.model_dump_json()), "precision_resolved": precision}
    thresholds = {arm_name(k): t for k, t in method.thresholds.items()}
    changes = _changes(nll, cfg.keep)
    result = SparsifyEval(
        settings, nll, changes, scored, thresholds=thresholds, cpu_s=time.process_time() - c0, **timed
    )
    _write(result, cfg)
    return result


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    prev = torch.get_num_threads()
    torch.set_num_threads(threads or prev)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _method(cfg: SparsifyEvalConfig, model: LM, tok: Any) -> Method:
    """The method: CATS' or TEAL's thresholds per kept fraction or CMoE's carving, calibrated on train text."""
    if cfg.method == "griffin":
        return Method("griffin")
    blocks = _calibration_blocks(cfg, tok)
    if cfg.method == "cats":
        return Method("cats", {k: calibrate(model, blocks, 1.0 - k) for k in cfg.keep})
    if cfg.method == "teal" and cfg.allocation == "greedy":
        from lmbricks.sparsify.teal_greedy import greedy_teal

        greedy = greedy_teal(model, blocks, [1.0 - k for k in cfg.keep])
        return Method("teal", dict(zip(cfg.keep, greedy.thresholds, strict=True)))
    if cfg.method == "teal":
        return Method("teal", {k: calibrate_teal(model, blocks, 1.0 - k) for k in cfg.keep})
    from lmbricks.moefy.cmoe import carve_model

    width = model.cfg.intermediate_size
    k = cfg.markers or max(1, width // 8)
    carved = carve_model(model, blocks, cfg.experts, cfg.shared_experts, k, router=cfg.router)
    return Method("cmoe", carved=carved, experts=cfg.experts, shared=cfg.shared_experts, oracle=cfg.oracle)


def _calibration_blocks(cfg: SparsifyEvalConfig, tok: Any) -> Tensor:
    """(B, T) calibration token ids: ``calibration_tokens`` of each domain's train split (or text file)."""
    from lmbricks.data.corpus import domain_text

    n = cfg.calibration_tokens
    if cfg.text_files:
        texts = [_read(p)[: 8 * n] for p in cfg.text_files]
    else:
        texts = [domain_text(d, "train", max_bytes=8 * n) for d in cfg.domains]
    seq = min(512, n)
    rows = [ids[: len(ids) // seq * seq].view(-1, seq) for ids in (torch.tensor(tok.encode(t)[:n]) for t in texts)]
    return torch.cat([r for r in rows if r.numel()])  # (B, seq)


def _quality(
    cfg: SparsifyEvalConfig, model: LM, wins: dict[str, list[Tensor]], method: Method, progress: Progress | None
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per domain, the mean continuation NLL of every arm, and the continuation tokens scored."""
    total, done = sum(len(w) for w in wins.values()), 0
    sums: dict[str, dict[str, float]] = {}
    for d, ws in wins.items():
        sums[d] = {}
        for w in ws:
            for arm, v in continuation_nll(model, w, cfg.prompt_tokens, cfg.keep, method).items():
                sums[d][arm] = sums[d].get(arm, 0.0) + v
            done += 1
            if progress is not None:
                progress(done, total)
    scored = {d: len(ws) * cfg.continuation_tokens for d, ws in wins.items()}
    return {d: {a: v / scored[d] for a, v in arms.items()} for d, arms in sums.items()}, scored


def _changes(nll: dict[str, dict[str, float]], keeps: list[float]) -> dict[str, dict[str, float]]:
    """arm -> domain -> exp(NLL_arm - NLL_dense) - 1, plus the mean over domains."""
    out = {}
    for keep in keeps:
        arm = arm_name(keep)
        per = {d: math.exp(v[arm] - v["dense"]) - 1.0 for d, v in nll.items()}
        out[arm] = {**per, "mean": sum(per.values()) / len(per)}
    return out


def _write(result: SparsifyEval, cfg: SparsifyEvalConfig) -> None:
    from lmbricks.checkpoint import atomic_directory
    from lmbricks.checkpoint.provenance import write_provenance

    with atomic_directory(cfg.out, force=cfg.force, inputs={"model": cfg.model}) as tmp:
        (tmp / "results.json").write_text(json.dumps(asdict(result), indent=2, default=str) + "\n")
        write_provenance(tmp, command=f"sparsify evaluate --method {cfg.method}", recipe=result.settings, inputs={})
