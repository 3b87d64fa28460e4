"""Capability neurons: neurons specific to a domain, and what pruning them does.

Statistic (per layer, neuron ``i``, domain ``d``, over the calibration tokens of all domains; the
activation value used is ``|a_i|``):

* ``corr`` (default): the point-biserial correlation of ``|a_i|`` with the indicator "token is from
  ``d``": ``(mean_d - mean_rest) * sqrt(p (1 - p)) / std_all``, ``p`` the share of ``d``'s tokens.
  It rewards neurons whose activation separates the domain, scaled by their spread.
* ``ratio``: ``mean_d / mean_rest`` (Skill-Neuron style mean-activation ratio).

The top ``fraction`` of neurons per layer by the statistic form the domain's set. Pruning zeroes
them before the down projection. As a control, the same number of random neurons per layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from lmbricks.analysis.corpus import domain_chunks, perplexities
from lmbricks.analysis.ffn import find_ffns
from lmbricks.analysis.hooks import edit_activations, tap_activations
from lmbricks.config import one_of, settings
from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.errors import ConfigError
from lmbricks.runtime.precision import RequestedPrecision

Statistic = Literal["corr", "ratio"]
STATISTICS: tuple[Statistic, ...] = ("corr", "ratio")


@settings
class NeuronConfig:
    """What ``analyze neurons`` measures (a :func:`lmbricks.config.settings` class: a wrong field is one
    ConfigError naming it).

    Attributes:
        domains: at least two distinct corpus domains.
        fraction: share of each layer's neurons selected per domain, in (0, 1).
        statistic: ``corr`` or ``ratio`` (see the module docstring).
        n_chunks: blocks per domain, for scoring (train split) and for evaluation (test split).
        seq_len: tokens per block.
        batch_size: blocks per forward pass.
        seed: seed of the random control sets.
        precision: the weights' precision for a model the pipeline loads (as
            :attr:`~lmbricks.analysis.SparsityConfig.precision`).
    """

    domains: Annotated[tuple[str, ...], Field(min_length=2)] = DEFAULT_DOMAINS
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.02
    statistic: Annotated[str, one_of(STATISTICS, "statistic")] = "corr"
    n_chunks: Annotated[int, Field(ge=1)] = 4
    seq_len: Annotated[int, Field(ge=2)] = 256
    batch_size: Annotated[int, Field(ge=1)] = 2
    seed: int = 0
    precision: RequestedPrecision = "auto"

    def __post_init__(self) -> None:
        if len(set(self.domains)) != len(self.domains):
            raise ConfigError(f"domains: duplicates in {self.domains}")


@dataclass
class DomainStats:
    """Streaming per-domain sums of ``|a|``: (L, D, I) sums and sums of squares, (D,) token counts."""

    sums: torch.Tensor
    squares: torch.Tensor
    counts: torch.Tensor


def specificity(stats: DomainStats, statistic: Statistic) -> torch.Tensor:
    """(L, D, I) specificity of every neuron to every domain (see the module docstring)."""
    n = stats.counts.double()[None, :, None]  # (1, D, 1)
    total_n = n.sum()
    mean_d = stats.sums / n.clamp_min(1)
    rest_n = (total_n - n).clamp_min(1)
    mean_rest = (stats.sums.sum(1, keepdim=True) - stats.sums) / rest_n
    if statistic == "ratio":
        return mean_d / mean_rest.clamp_min(1e-12)
    mean_all = stats.sums.sum(1, keepdim=True) / total_n
    var_all = (stats.squares.sum(1, keepdim=True) / total_n - mean_all**2).clamp_min(1e-24)
    p = n / total_n
    return (mean_d - mean_rest) * (p * (1 - p)).sqrt() / var_all.sqrt()


def top_neurons(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """(L, D, k) indices of the top ``fraction`` neurons per layer and domain (k >= 1)."""
    k = max(1, int(round(fraction * scores.shape[-1])))
    return scores.topk(k, dim=-1).indices


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Jaccard index of two sets of (layer, neuron) pairs given as (L, k) index tensors."""
    inter = union = 0
    for row_a, row_b in zip(a.tolist(), b.tolist(), strict=True):
        sa, sb = set(row_a), set(row_b)
        inter += len(sa & sb)
        union += len(sa | sb)
    return inter / union if union else 0.0


def prune_edit(sets: torch.Tensor, width: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """An activation editor zeroing neurons ``sets[layer]`` (L, k) in every layer."""
    keep = torch.ones(sets.shape[0], width)
    keep.scatter_(1, sets, 0.0)

    def edit(layer: int, a: torch.Tensor) -> torch.Tensor:
        return a * keep[layer].to(a.dtype)

    return edit


@dataclass
class NeuronResult:
    """What ``analyze neurons`` measured (relative changes: 0.10 = +10%).

    Attributes:
        config: the configuration used.
        base_ppl: ``{domain: ppl}`` unpruned.
        change: ``{pruned domain: {evaluated domain: change}}``.
        random_change: the same for the random control sets.
        jaccard: ``{domain: {domain: Jaccard index}}`` of the selected sets.
        neurons: ``{domain: [[neuron indices] per layer]}``.
    """

    config: NeuronConfig
    base_ppl: dict[str, float]
    change: dict[str, dict[str, float]]
    random_change: dict[str, dict[str, float]]
    jaccard: dict[str, dict[str, float]]
    neurons: dict[str, list[list[int]]]

    @property
    def diagonal_mean(self) -> float:
        """Mean change of a domain when its own neurons are pruned."""
        return sum(self.change[d][d] for d in self.config.domains) / len(self.config.domains)

    @property
    def off_diagonal_mean(self) -> float:
        """Mean change of the other domains."""
        ds = self.config.domains
        vals = [self.change[p][e] for p in ds for e in ds if p != e]
        return sum(vals) / len(vals)

    @property
    def random_mean_change(self) -> float:
        """Mean change over all cells of the random control."""
        vals = [v for row in self.random_change.values() for v in row.values()]
        return sum(vals) / len(vals)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = {
            "diagonal_mean": self.diagonal_mean,
            "off_diagonal_mean": self.off_diagonal_mean,
            "random_mean": self.random_mean_change,
        }
        return d


def collect_stats(model: Any, blocks: Sequence[Any], chunks: dict[str, torch.Tensor], batch_size: int) -> DomainStats:
    """Per-domain sums of ``|a|`` and ``a^2`` for every neuron (one forward sweep per domain)."""
    n_layers, width = len(blocks), blocks[0].width
    sums = torch.zeros(n_layers, len(chunks), width, dtype=torch.float64)
    squares = torch.zeros_like(sums)
    counts = torch.zeros(len(chunks), dtype=torch.float64)
    current = [0]

    def read(layer: int, a: torch.Tensor) -> None:
        flat = a.reshape(-1, a.shape[-1]).double().abs()
        sums[layer, current[0]] += flat.sum(0)
        squares[layer, current[0]] += (flat * flat).sum(0)

    with torch.no_grad(), tap_activations(blocks, read):
        for j, ids in enumerate(chunks.values()):
            current[0] = j
            for start in range(0, ids.shape[0], batch_size):
                model(input_ids=ids[start : start + batch_size])
            counts[j] = ids.numel()
    return DomainStats(sums, squares, counts)


def analyze_neurons(
    model: Any,
    tokenizer: Any,
    config: NeuronConfig,
    texts_of: Callable[[str, str], list[str]] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> NeuronResult:
    """Score, select and prune capability neurons per domain (see the module docstring).

    Args:
        model: a dense Hugging Face causal LM in eval mode.
        tokenizer: its tokenizer.
        config: what to measure.
        texts_of: ``(domain, split) -> documents`` (default :func:`lmbricks.data.load_texts`).
        on_step: progress callback receiving a description per sweep.

    Returns:
        A :class:`NeuronResult`.
    """
    step = on_step or (lambda _msg: None)
    blocks = find_ffns(model)
    widths = {b.width for b in blocks}
    if len(widths) != 1:
        raise ConfigError(f"FFN widths differ across layers ({sorted(widths)}); not supported")
    width = widths.pop()
    domains = list(config.domains)
    step("scoring neurons (train split)")
    calib = domain_chunks(tokenizer, domains, "train", config.n_chunks, config.seq_len, texts_of)
    stats = collect_stats(model, blocks, calib, config.batch_size)
    scores = specificity(stats, config.statistic)  # type: ignore[arg-type]
    chosen = top_neurons(scores, config.fraction)  # (L, D, k)
    k = chosen.shape[-1]
    gen = torch.Generator().manual_seed(config.seed)
    randoms = torch.stack(
        [torch.stack([torch.randperm(width, generator=gen)[:k] for _ in blocks]) for _ in domains], 1
    )  # (L, D, k)
    evals = domain_chunks(tokenizer, domains, "test", config.n_chunks, config.seq_len, texts_of)
    step("baseline")
    base = perplexities(model, evals, config.batch_size)
    change: dict[str, dict[str, float]] = {}
    random_change: dict[str, dict[str, float]] = {}
    for j, domain in enumerate(domains):
        for label, sets, target in (("specific", chosen, change), ("random", randoms, random_change)):
            step(f"pruning {domain} ({label})")
            with edit_activations(blocks, prune_edit(sets[:, j], width)):
                ppl = perplexities(model, evals, config.batch_size)
            target[domain] = {e: ppl[e] / base[e] - 1.0 for e in domains}
    overlap = {
        a: {b: jaccard(chosen[:, i], chosen[:, j]) for j, b in enumerate(domains)} for i, a in enumerate(domains)
    }
    neurons = {d: chosen[:, j].sort(-1).values.tolist() for j, d in enumerate(domains)}
    for row in change.values():
        for key, value in row.items():
            if not math.isfinite(value):
                row[key] = float("inf")
    return NeuronResult(config, base, change, random_change, overlap, neurons)
