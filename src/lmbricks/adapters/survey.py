"""Survey a base model's bricks: what each does to every domain, whether a router finds the right one, a LoraHub mix.

Everything is measured live on one loaded base with one adapter slot (a cleared slot computes
exactly the base): held-out perplexity of the base and of the base with each brick on the bricks'
domains, routing of a few held-out texts per domain by the nearest domain centroid (centroids from
the centroid cache after the first run), and one LoraHub search of per-brick weights on a few
examples of one domain. The tour's bricks section is this survey plus its plots and sentences.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lmbricks.adapters.centroids import CentroidStats, brick_router
from lmbricks.adapters.compose import Factors
from lmbricks.adapters.hub_adapter import AdapterSlot
from lmbricks.adapters.routing_eval import evaluate_routing
from lmbricks.adapters.session import BrickSet


class SurveySettings(BaseModel):
    """Budgets of a survey, counted in bytes, documents and tokens (defaults: the tour's full mode)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eval_bytes: int = Field(default=12_000, description="held-out bytes per domain (effect table, LoraHub score)")
    route_docs: int = Field(default=3, description="held-out documents routed per domain")
    route_tokens: int = Field(default=128, description="tokens per routed document")
    centroid_tokens: int = Field(default=1024, description="training tokens per brick's centroid")
    examples: int = Field(default=3, description="LoraHub few-shot examples (validation split)")
    example_tokens: int = Field(default=64, description="tokens per LoraHub example")
    budget: int = Field(default=8, description="LoraHub evaluations")
    lorahub_domains: tuple[str, ...] = Field(
        default=("math", "dialogue", "zh", "code"),
        description="the LoraHub domain: the first of these among the bricks",
    )


def with_domains(bset: BrickSet) -> BrickSet:
    """The bricks of ``bset`` that record their domain (routing and the effect table need it)."""
    kept = [i for i, info in enumerate(bset.infos) if info.domain]
    return BrickSet(bset.base, [bset.infos[i] for i in kept], [bset.factors[i] for i in kept])


def table_domains(brick_domains: Sequence[str], all_domains: bool = True) -> list[str]:
    """Columns of the effect table: the bricks' domains, plus (``all_domains``) the other cached standard ones."""
    from lmbricks.data.store import read_manifest
    from lmbricks.eval import DEFAULT_DOMAINS

    cols = [d for d in DEFAULT_DOMAINS if d in brick_domains or (all_domains and read_manifest(d) is not None)]
    return cols + [d for d in brick_domains if d not in cols]


def effect_table(
    slot: AdapterSlot, tokenizer: Any, bricks: Mapping[str, Factors], domains: Sequence[str], max_bytes: int
) -> dict[str, dict[str, float]]:
    """Held-out perplexity ``{row: {domain: ppl}}`` of the base (row ``base``) and the base with each brick.

    Args:
        slot: an adapter slot around the base model.
        tokenizer: its tokenizer.
        bricks: ``{name: factors}``.
        domains: evaluation domains (test split, first ``max_bytes`` bytes each).
    """
    from lmbricks.eval import evaluate_domains

    rows: dict[str, dict[str, float]] = {}
    for name in ["base", *bricks]:
        if name == "base":
            slot.clear()
        else:
            slot.set(bricks[name])
        rows[name] = {
            d: r.ppl for d, r in evaluate_domains(slot.model, tokenizer, domains, max_bytes=max_bytes).items()
        }
    slot.clear()
    return rows


def ppl_change(rows: Mapping[str, Mapping[str, float]], name: str, domain: str) -> float:
    """Relative perplexity change of row ``name`` against the base on ``domain``."""
    return rows[name][domain] / rows["base"][domain] - 1.0


@dataclass
class LoraHubMix:
    """One LoraHub search on a domain's few-shot examples, and the mix scored on its held-out text."""

    domain: str
    examples: int
    example_tokens: int
    budget: int
    weights: dict[str, float]
    objective: list[float]  # of each evaluation, in order
    loss: float
    ppl_base: float
    ppl_composed: float
    own: str | None  # the brick of the domain, if any
    ppl_own_brick: float | None
    starts_at_zero: bool  # the first evaluated weights are all zero (the base)

    def row(self) -> dict[str, Any]:
        """The JSON record: every field but ``own`` and ``starts_at_zero``."""
        return {k: v for k, v in asdict(self).items() if k not in ("own", "starts_at_zero")}


def lorahub_mix(
    slot: AdapterSlot,
    tokenizer: Any,
    factors: Mapping[str, Factors],
    domain_of: Mapping[str, str],
    effects: Mapping[str, Mapping[str, float]],
    settings: SurveySettings,
) -> LoraHubMix:
    """Search LoraHub weights of every brick on a few examples of one domain; score the mix held out."""
    from lmbricks.adapters.lorahub import LoraHubSettings, example_batches, lorahub_search
    from lmbricks.data import load_texts
    from lmbricks.eval import evaluate_domains

    names = list(factors)
    domain = next((d for d in settings.lorahub_domains if d in domain_of.values()), next(iter(domain_of.values())))
    texts = [t for t in load_texts(domain, "validation") if t.strip()][: settings.examples]
    batches = example_batches(tokenizer, texts, settings.example_tokens)
    result = lorahub_search(slot, [factors[n] for n in names], batches, LoraHubSettings(budget=settings.budget))
    # The slot now holds the best combination: score it on the domain's held-out text.
    composed = evaluate_domains(slot.model, tokenizer, [domain], max_bytes=settings.eval_bytes)[domain].ppl
    slot.clear()
    own = next((n for n, d in domain_of.items() if d == domain), None)
    return LoraHubMix(
        domain=domain,
        examples=len(batches),
        example_tokens=settings.example_tokens,
        budget=settings.budget,
        weights=dict(zip(names, result.weights, strict=True)),
        objective=[v for _, v in result.history],
        loss=result.loss,
        ppl_base=effects["base"][domain],
        ppl_composed=composed,
        own=own,
        ppl_own_brick=effects[own][domain] if own else None,
        starts_at_zero=not any(result.history[0][0]),
    )


@dataclass
class BrickSurvey:
    """What :func:`survey_bricks` measured."""

    bricks: dict[str, Path]  # brick name -> directory
    domain_of: dict[str, str]  # brick name -> its domain
    domains: list[str]  # the effect table's columns
    effects: dict[str, dict[str, float]]  # {"base" | brick name: {domain: ppl}}
    routing: dict[str, dict[str, Any]]  # {domain | "all": evaluate_routing row}
    stats: CentroidStats
    lorahub: LoraHubMix
    timings: dict[str, float] = field(default_factory=dict)

    def own_change(self) -> dict[str, float]:
        """Each brick's perplexity change on its own domain."""
        return {n: ppl_change(self.effects, n, d) for n, d in self.domain_of.items() if d in self.domains}

    def results(self, settings: SurveySettings) -> dict[str, Any]:
        """The JSON record (the tour's ``results.json`` section)."""
        return {
            "available": True,
            "bricks": {n: str(p) for n, p in self.bricks.items()},
            "effects": {"eval_bytes": settings.eval_bytes, "domains": self.domains, "ppl": self.effects},
            "routing": self.routing,
            "routing_settings": {
                "centroid_tokens": settings.centroid_tokens,
                "doc_tokens": settings.route_tokens,
                "centroids_cached": self.stats.hits,
                "centroids_computed": self.stats.computed,
            },
            "lorahub": self.lorahub.row(),
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
        }


def survey_bricks(bset: BrickSet, settings: SurveySettings = SurveySettings()) -> BrickSurvey:
    """Measure the effect table, the routing accuracy and one LoraHub mix of ``bset``'s bricks.

    Args:
        bset: the base and bricks that record their domain (see :func:`with_domains`).
        settings: the budgets.

    Returns:
        The :class:`BrickSurvey` (seconds per part in ``timings``).
    """
    from lmbricks.data import load_texts
    from lmbricks.hub import load_hf_model

    domain_of = {n: str(i.domain) for n, i in zip(bset.names, bset.infos, strict=True)}
    factors = dict(zip(bset.names, bset.factors, strict=True))
    model, tokenizer = load_hf_model(bset.base.path)
    slot = AdapterSlot(model, bset.rank, bset.modules)  # a cleared slot computes exactly the base
    t0 = time.perf_counter()
    # The bricks' own domains only (time); bricks/<model>/TABLE.md has the 12 KB table with English prose.
    domains = table_domains(list(domain_of.values()), all_domains=False)
    effects = effect_table(slot, tokenizer, factors, domains, settings.eval_bytes)
    timings = {"effects": time.perf_counter() - t0}
    t0 = time.perf_counter()
    stats = CentroidStats()
    router = brick_router(bset, slot.model, tokenizer, max_tokens=settings.centroid_tokens, stats=stats)
    held_out = {d: [t for t in load_texts(d, "test") if t.strip()] for d in domain_of.values()}
    routing = evaluate_routing(
        slot,
        tokenizer,
        router,
        factors,
        domain_of,
        held_out,
        doc_tokens=settings.route_tokens,
        per_domain=settings.route_docs,
    )
    timings["routing"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hub = lorahub_mix(slot, tokenizer, factors, domain_of, effects, settings)
    timings["lorahub"] = time.perf_counter() - t0
    paths = {n: i.path for n, i in zip(bset.names, bset.infos, strict=True)}
    return BrickSurvey(paths, domain_of, domains, effects, routing, stats, hub, timings)
