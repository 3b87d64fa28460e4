"""Activation sparsity of a dense model: metric distributions, masking curve and CETT thresholds.

Protocol (Configurable Foundation Models, arXiv 2409.02877, rebuilt; CETT from ReLU^2 Wins,
arXiv 2402.03804):

1. Distributions: on each domain's evaluation blocks, per layer, histograms of log10 of both neuron
   metrics and the share of the per-token metric mass held by the top 10/30/50% of neurons.
2. Masking curve: for every metric and sparsity ``rho``, each FFN keeps only the top ``1 - rho``
   neurons per token (the others are zeroed before the down projection); perplexity per domain.
3. CETT: per layer, the norm-metric threshold whose mean CETT on calibration blocks (train split)
   equals the target; the thresholds are then applied to the evaluation blocks, giving a
   perplexity per domain and the resulting per-layer sparsity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import torch
from pydantic import Field

from lmbricks.analysis.corpus import domain_chunks, perplexities
from lmbricks.analysis.ffn import FFNBlock, find_ffns
from lmbricks.analysis.hooks import edit_activations, tap_activations
from lmbricks.analysis.masking import METRICS, cett_threshold, mask_threshold, mask_topk, neuron_scores
from lmbricks.config import one_of, settings
from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.runtime.precision import RequestedPrecision

DEFAULT_SPARSITIES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
TOP_SHARES = (0.1, 0.3, 0.5)
HIST_RANGE = (-6.0, 2.0)  # log10 of metric values
HIST_BINS = 64
_CALIB_ROWS = 2048  # calibration tokens kept per layer for CETT


@settings
class SparsityConfig:
    """What ``analyze sparsity`` measures (a :func:`lmbricks.config.settings` class: a wrong field is one
    ConfigError naming it).

    Attributes:
        domains: corpus domains to evaluate (at least one).
        sparsities: masked fractions ``rho`` of the masking curve, in [0, 1] (0 is the unmasked baseline).
        metrics: neuron metrics to mask by (``abs``, ``norm``).
        cett_target: tail-norm ratio held by the CETT thresholds, in (0, 1) (None: skip CETT).
        n_chunks: evaluation blocks per domain (and calibration blocks per domain for CETT).
        seq_len: tokens per block (at least 2).
        batch_size: blocks per forward pass.
        precision: the weights' precision for a model the pipeline loads (``auto``: bf16 where the CPU
            multiplies bf16 natively, :func:`lmbricks.runtime.resolve_precision`); a result records what
            it resolved to. A loaded model passed to :func:`analyze_sparsity` runs as it is.
    """

    domains: Annotated[tuple[str, ...], Field(min_length=1)] = DEFAULT_DOMAINS
    sparsities: tuple[Annotated[float, Field(ge=0.0, le=1.0)], ...] = DEFAULT_SPARSITIES
    metrics: tuple[Annotated[str, one_of(METRICS, "metric")], ...] = METRICS
    cett_target: Annotated[float, Field(gt=0.0, lt=1.0)] | None = 0.2
    n_chunks: Annotated[int, Field(ge=1)] = 4
    seq_len: Annotated[int, Field(ge=2)] = 256
    batch_size: Annotated[int, Field(ge=1)] = 2
    precision: RequestedPrecision = "auto"


@dataclass
class SparsityResult:
    """Everything ``analyze sparsity`` measured (JSON-serialisable via :meth:`to_dict`).

    Attributes:
        config: the configuration used.
        base_ppl: ``{domain: ppl}`` of the unmodified model.
        curve: ``{metric: {str(rho): {domain: ppl}}}``.
        top_share: ``{metric: [[share of mass in top 10/30/50%] per layer]}`` (mean over tokens).
        histograms: ``{metric: [[counts per log10 bin] per layer]}`` over all evaluation tokens.
        cett_thresholds: per-layer thresholds (empty without CETT).
        cett_sparsity: per-layer fraction of neurons below the threshold on the evaluation blocks.
        cett_ppl: ``{domain: ppl}`` with the CETT thresholds applied.
    """

    config: SparsityConfig
    base_ppl: dict[str, float]
    curve: dict[str, dict[str, dict[str, float]]]
    top_share: dict[str, list[list[float]]]
    histograms: dict[str, list[list[float]]]
    cett_thresholds: list[float] = field(default_factory=list)
    cett_sparsity: list[float] = field(default_factory=list)
    cett_ppl: dict[str, float] = field(default_factory=dict)

    def mean_change(self, metric: str, rho: float) -> float:
        """Average over domains of the relative perplexity change at sparsity ``rho``."""
        ppl = self.curve[metric][f"{rho:g}"]
        return sum(ppl[d] / self.base_ppl[d] - 1.0 for d in ppl) / len(ppl)

    @property
    def cett_mean_sparsity(self) -> float:
        """The CETT sparsity averaged over layers (nan without CETT)."""
        return sum(self.cett_sparsity) / len(self.cett_sparsity) if self.cett_sparsity else math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def masking_changes(result: SparsityResult, metric: str = "norm") -> dict[str, Any]:
    """One metric's relative perplexity changes of a sparsity analysis (what the tour's section shows).

    Args:
        result: the analysis.
        metric: the masking metric whose curve is read.

    Returns:
        ``ppl_change`` (``{str(rho): {domain: change}}``), ``mean_change`` (``{str(rho): mean over
        domains}``) and ``top_share_norm`` (``{"top 10%": share of a token's norm-metric mass, ...}``,
        mean over layers).
    """
    base, curve, top = result.base_ppl, result.curve[metric], result.top_share["norm"]
    change = {f"{rho:g}": {d: curve[f"{rho:g}"][d] / base[d] - 1.0 for d in base} for rho in result.config.sparsities}
    share = {f"top {int(f * 100)}%": sum(row[j] for row in top) / len(top) for j, f in enumerate(TOP_SHARES)}
    return {
        "ppl_change": change,
        "mean_change": {r: sum(v.values()) / len(v) for r, v in change.items()},
        "top_share_norm": share,
    }


class _Distribution:
    """Streams per-layer histograms and top-share statistics of both metrics."""

    def __init__(self, blocks: Sequence[FFNBlock]) -> None:
        self.norms = [b.down_norms() for b in blocks]
        n = len(blocks)
        self.hist = {m: torch.zeros(n, HIST_BINS, dtype=torch.float64) for m in METRICS}
        self.share = {m: torch.zeros(n, len(TOP_SHARES), dtype=torch.float64) for m in METRICS}
        self.tokens = torch.zeros(n, dtype=torch.float64)

    def __call__(self, layer: int, a: torch.Tensor) -> None:
        a = a.reshape(-1, a.shape[-1])  # (N, I)
        width = a.shape[-1]
        for metric in METRICS:
            s = neuron_scores(a, self.norms[layer], metric)  # type: ignore[arg-type]
            logs = s.clamp_min(1e-30).log10().clamp(*HIST_RANGE)
            self.hist[metric][layer] += torch.histc(logs, HIST_BINS, *HIST_RANGE).double()
            cum = s.sort(dim=-1, descending=True).values.cumsum(-1)  # (N, I)
            total = cum[:, -1:].clamp_min(1e-30)
            for j, frac in enumerate(TOP_SHARES):
                k = max(1, int(round(frac * width)))
                self.share[metric][layer, j] += (cum[:, k - 1 : k] / total).sum().double()
        self.tokens[layer] += a.shape[0]

    def top_share(self) -> dict[str, list[list[float]]]:
        return {m: (v / self.tokens.clamp_min(1)[:, None]).tolist() for m, v in self.share.items()}

    def histograms(self) -> dict[str, list[list[float]]]:
        return {m: v.tolist() for m, v in self.hist.items()}


def _calibration(model: Any, blocks: Sequence[FFNBlock], chunks: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """(N, I) activations per layer on the calibration blocks (at most ``_CALIB_ROWS`` rows each)."""
    rows: list[list[torch.Tensor]] = [[] for _ in blocks]
    with torch.no_grad(), tap_activations(blocks, lambda i, a: rows[i].append(a.reshape(-1, a.shape[-1]))):
        for ids in chunks.values():
            model(input_ids=ids)
    out = []
    for parts in rows:
        a = torch.cat(parts)
        step = max(1, a.shape[0] // _CALIB_ROWS)
        out.append(a[::step][:_CALIB_ROWS].float())
    return out


def analyze_sparsity(
    model: Any,
    tokenizer: Any,
    config: SparsityConfig,
    texts_of: Callable[[str, str], list[str]] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> SparsityResult:
    """Run the sparsity protocol (see the module docstring) on ``model``.

    Args:
        model: a dense Hugging Face causal LM in eval mode.
        tokenizer: its tokenizer.
        config: what to measure.
        texts_of: ``(domain, split) -> documents`` (default :func:`lmbricks.data.load_texts`).
        on_step: called with a description before each forward sweep (progress).

    Returns:
        A :class:`SparsityResult`.
    """
    step = on_step or (lambda _msg: None)
    blocks = find_ffns(model)
    chunks = domain_chunks(tokenizer, config.domains, "test", config.n_chunks, config.seq_len, texts_of)
    dist = _Distribution(blocks)
    step("baseline and metric distributions")
    with tap_activations(blocks, dist):
        base = perplexities(model, chunks, config.batch_size)
    curve = _masking_curve(model, blocks, chunks, config, base, step)
    result = SparsityResult(config, base, curve, dist.top_share(), dist.histograms())
    if config.cett_target is not None:
        step(f"CETT {config.cett_target} thresholds (train split)")
        calib = domain_chunks(tokenizer, config.domains, "train", 1, config.seq_len, texts_of)
        result.cett_thresholds, result.cett_sparsity, result.cett_ppl = _cett(
            model, blocks, calib, chunks, config.cett_target, config.batch_size, step
        )
    return result


def _masking_curve(
    model: Any,
    blocks: Sequence[FFNBlock],
    chunks: dict[str, torch.Tensor],
    config: SparsityConfig,
    base: dict[str, float],
    step: Callable[[str], None],
) -> dict[str, dict[str, dict[str, float]]]:
    """``{metric: {str(rho): {domain: ppl}}}`` with each FFN masked to its top ``1 - rho`` neurons per token."""
    norms = [b.down_norms() for b in blocks]
    curve: dict[str, dict[str, dict[str, float]]] = {}
    for metric in config.metrics:
        curve[metric] = {}
        for rho in config.sparsities:
            if rho == 0.0:
                curve[metric]["0"] = dict(base)
                continue
            step(f"masking {rho:.0%} by {metric}")

            def edit(layer: int, a: torch.Tensor, rho: float = rho, metric: str = metric) -> torch.Tensor:
                return mask_topk(a, norms[layer], metric, rho)  # type: ignore[arg-type]

            with edit_activations(blocks, edit):
                curve[metric][f"{rho:g}"] = perplexities(model, chunks, config.batch_size)
    return curve


def _cett(
    model: Any,
    blocks: Sequence[FFNBlock],
    calib_chunks: dict[str, torch.Tensor],
    chunks: dict[str, torch.Tensor],
    target: float,
    batch_size: int,
    step: Callable[[str], None],
) -> tuple[list[float], list[float], dict[str, float]]:
    """``(thresholds, sparsity per layer, {domain: ppl})``: CETT thresholds fitted on the calibration
    blocks, then applied to the evaluation blocks."""
    calib = _calibration(model, blocks, calib_chunks)
    thresholds = [cett_threshold(a, b.down.weight, target) for a, b in zip(calib, blocks, strict=True)]
    norms = [b.down_norms() for b in blocks]
    kept = torch.zeros(len(blocks), dtype=torch.float64)
    seen = torch.zeros(len(blocks), dtype=torch.float64)

    def cett_edit(layer: int, a: torch.Tensor) -> torch.Tensor:
        out = mask_threshold(a, norms[layer], thresholds[layer])
        kept[layer] += float((out != 0).sum())
        seen[layer] += a.numel()
        return out

    step("masking by CETT thresholds")
    with edit_activations(blocks, cett_edit):
        ppl = perplexities(model, chunks, batch_size)
    return thresholds, (1.0 - kept / seen.clamp_min(1)).tolist(), ppl
