"""The adapters pipelines: train, update, compose and route bricks, and evaluate the routing.

Each takes a typed config (a pydantic model validated by :func:`lmbricks.config.validate`, so a
wrong field is named) and returns a typed result; ``lmbricks adapters``, the tour and scripts/ call
them. Training and updating are :func:`train_brick` / :func:`update_brick` (config
:class:`LoraTrainConfig`, result :class:`BrickInfo`, in ``train.py``), re-exported here::

    from lmbricks.adapters.pipeline import ComposeConfig, compose_bricks, configure
    result = compose_bricks(configure(ComposeConfig, bricks=["zh", "math"], method="lorahub", domain="math"), "out/mix")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from lmbricks.adapters.brick import BrickInfo, pairs_record, save_brick
from lmbricks.adapters.centroids import CentroidStats, brick_router
from lmbricks.adapters.compose import METHODS, Composition, Factors, compose, compose_cat
from lmbricks.adapters.config import LoraTrainConfig
from lmbricks.adapters.hub_adapter import AdapterSlot
from lmbricks.adapters.lorahub import LoraHubResult
from lmbricks.adapters.route import Router, mean_hidden, text_ids
from lmbricks.adapters.routing_eval import evaluate_routing, greedy_completion
from lmbricks.adapters.session import BrickSet, load_base, load_bricks
from lmbricks.adapters.train import train_brick, update_brick
from lmbricks.checkpoint import check_output
from lmbricks.checkpoint.provenance import reference_name
from lmbricks.config import one_of, validate
from lmbricks.errors import ConfigError
from lmbricks.hub import reference_paths

Status = Callable[[str], None]
Options = TypeVar("Options", bound=BaseModel)
DEFAULT_MODEL = "smollm2-135m-instruct"


def _quiet(_message: str) -> None:
    """A status callback that says nothing."""


def configure(cls: type[Options], /, **fields: object) -> Options:
    """Build a pipeline config (:class:`ComposeConfig`, :class:`RouteConfig`) from keyword arguments.

    Raises:
        ConfigError: naming the field and value at fault (see :func:`lmbricks.config.validate`).
    """
    return validate(cls, fields, f"{cls.__name__.removesuffix('Config').lower()} options")


# ------------------------------------------------------------------------------------------ compose
class ComposeConfig(BaseModel):
    """How bricks are combined (see :func:`lmbricks.adapters.compose.compose` for the methods)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="the base model every brick must belong to")
    bricks: tuple[str, ...] = Field(min_length=1, description="brick directories or catalogue names")
    method: Annotated[str, one_of(METHODS, "compose method")] = Field("cat", description=" | ".join(METHODS))
    weights: tuple[float, ...] | None = Field(None, description="per-brick weights (lorahub: searched if None)")
    rank: int | None = Field(None, ge=1, description="output rank for svd / ties / dare")
    density: float | None = Field(None, gt=0, le=1, description="kept fraction for ties (0.2) / dare (0.5)")
    domain: str | None = Field(None, description="lorahub: domain of the few-shot examples (validation split)")
    examples: int = Field(5, ge=1, description="lorahub: number of few-shot examples")
    budget: int = Field(40, ge=1, description="lorahub: nevergrad evaluations")
    seed: int = Field(42, description="lorahub search / dare drop seed")
    merge: bool = Field(False, description="write base + composed update as a full model, not an adapter")


@dataclass
class ComposeResult:
    """What :func:`compose_bricks` wrote: the weights used, the reconstruction error, the LoraHub search."""

    out: Path
    weights: list[float]
    rel_error: float | None
    lorahub: LoraHubResult | None = None


def search_lorahub_weights(
    bset: BrickSet,
    domain: str,
    *,
    examples: int = 5,
    budget: int = 40,
    seed: int = 42,
    max_tokens: int = 128,
    on_eval: Callable[[int, float], None] | None = None,
) -> LoraHubResult:
    """Run LoraHub's search for ``bset``'s bricks on ``examples`` validation documents of ``domain``."""
    from lmbricks.adapters.lorahub import LoraHubSettings, example_batches, lorahub_search
    from lmbricks.data import load_texts

    model, tokenizer = load_base(bset)
    slot = AdapterSlot(model, bset.rank, bset.modules)
    texts = [t for t in load_texts(domain, "validation") if t.strip()][:examples]
    batches = example_batches(tokenizer, texts, max_tokens)
    return lorahub_search(slot, bset.factors, batches, LoraHubSettings(budget=budget, seed=seed), on_eval)


def _recipe(cfg: ComposeConfig, bset: BrickSet, out: Path, used: list[float], search: LoraHubResult | None) -> dict:
    lorahub = None
    if search is not None:
        lorahub = {"loss": search.loss, "objective": search.objective, "budget": cfg.budget, "examples": cfg.examples}
    return {
        "compose": {
            "method": cfg.method,
            "bricks": [reference_name(i.path, out) for i in bset.infos],
            "weights": used,
            "rank": cfg.rank,
            "density": cfg.density,
            "seed": cfg.seed,
            "domain": cfg.domain,
            "lorahub": lorahub,
        }
    }


def _write_composition(
    out: Path,
    cfg: ComposeConfig,
    bset: BrickSet,
    result: Composition,
    used: list[float],
    recipe: dict,
    *,
    force: bool,
    command: str,
) -> None:
    """The composed update as an adapter directory, or with ``cfg.merge`` merged into the base's weights."""
    inputs: dict[str, Path] = {"base": bset.base.path, **{f"brick{i}": b.path for i, b in enumerate(bset.infos)}}
    rank = next(iter(result.pairs.values())).rank
    record = pairs_record(
        result.pairs,
        bset.base,
        name=out.name,
        rank=rank,
        alpha=float(rank),
        domain=cfg.domain,
        composed_from=[i.name for i in bset.infos],
        weights=used,
        rel_error=result.rel_error,
    )
    if cfg.merge:
        from lmbricks.adapters.merge_into import save_merged

        save_merged(
            bset.base.path, result.pairs, out, command=command, recipe=recipe, inputs=inputs, bricks=record, force=force
        )
    else:
        save_brick(
            out, result.pairs, bset.base, record=record, command=command, recipe=recipe, inputs=inputs, force=force
        )


def compose_bricks(
    cfg: ComposeConfig,
    out: str | Path,
    *,
    force: bool = False,
    command: str = "lmbricks.adapters.compose_bricks",
    on_eval: Callable[[int, float], None] | None = None,
) -> ComposeResult:
    """Compose bricks and write the result.

    Args:
        cfg: the bricks, their base, the method and its settings; for ``lorahub`` without weights
            they are searched on ``cfg.examples`` validation documents of ``cfg.domain``.
        out: output: a PEFT adapter directory, or with ``cfg.merge`` a full model directory.
        force: replace ``out``.
        command: recorded in ``lmbricks.json``.
        on_eval: LoraHub progress, ``(evaluation number, objective)``.

    Returns:
        The :class:`ComposeResult` (``lorahub`` holds the search when one ran).
    """
    out = check_output(out, [*reference_paths(cfg.model), *(Path(b) for b in cfg.bricks)], force)
    bset = load_bricks(cfg.model, list(cfg.bricks))
    check_output(out, [bset.base.path, *(i.path for i in bset.infos)], force)  # catalogue names resolved
    search = None
    weights = None if cfg.weights is None else list(cfg.weights)
    if cfg.method == "lorahub" and weights is None:
        if cfg.domain is None:
            raise ConfigError("lorahub without --weights needs --domain for its few-shot examples")
        search = search_lorahub_weights(
            bset, cfg.domain, examples=cfg.examples, budget=cfg.budget, seed=cfg.seed, on_eval=on_eval
        )
        weights = search.weights
    result = compose(cfg.method, bset.factors, weights, rank=cfg.rank, density=cfg.density, seed=cfg.seed)
    n = len(cfg.bricks)
    used = list(weights) if weights is not None else [1.0 / n if cfg.method == "lorahub" else 1.0] * n
    recipe = _recipe(cfg, bset, out, used, search)
    _write_composition(out, cfg, bset, result, used, recipe, force=force, command=command)
    return ComposeResult(out, used, result.rel_error, search)


# -------------------------------------------------------------------------------------------- route
class RouteConfig(BaseModel):
    """How inputs are routed to bricks by the nearest domain centroid of the base's hidden states."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="the base model")
    bricks: tuple[str, ...] | None = Field(None, description="bricks to route between (None: the catalogue)")
    top_k: int = Field(1, ge=1, description="bricks per input (weighted by similarity)")
    temperature: float = Field(0.1, gt=0, description="softmax temperature of the top-k weights")
    layer: int = Field(-1, description="hidden layer of the domain centroids")
    max_new_tokens: int = Field(0, ge=0, description="generate this many tokens with the routed bricks")
    per_domain: int = Field(8, ge=1, description="evaluation: held-out documents per domain")
    refresh_centroids: bool = Field(False, description="recompute the cached domain centroids")


@dataclass
class RoutedPrompt:
    """One prompt, the bricks chosen for it (best first, weights summing to 1) and the completion."""

    prompt: str
    bricks: list[tuple[str, float]]
    completion: str | None = None

    def row(self) -> dict[str, Any]:
        """The JSON row (``completion`` only when one was generated)."""
        row: dict[str, Any] = {"prompt": self.prompt, "bricks": self.bricks}
        if self.completion is not None:
            row["completion"] = self.completion
        return row


@dataclass
class RouteResult:
    """Routed prompts, or (``evaluation``) ``{domain: row, "all": row}`` of :func:`evaluate_routing`."""

    prompts: list[RoutedPrompt] = field(default_factory=list)
    evaluation: dict[str, dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        """The evaluation rows, or ``{"prompts": [row, ...]}``."""
        return self.evaluation if self.evaluation is not None else {"prompts": [p.row() for p in self.prompts]}


@dataclass
class _Routing:
    """The base with an adapter slot, its tokenizer, the fitted router and the bricks' factors by name."""

    slot: AdapterSlot
    tokenizer: Any
    router: Router
    bset: BrickSet

    def route(self, prompt: str, cfg: RouteConfig) -> RoutedPrompt:
        """Route one prompt (one base forward pass) and, with ``cfg.max_new_tokens``, complete it."""
        self.slot.clear()
        h = mean_hidden(self.slot.model, text_ids(self.tokenizer, prompt, 1024), self.router.layer)
        choice = self.router.route(h, top_k=cfg.top_k, temperature=cfg.temperature)[0]
        routed = RoutedPrompt(prompt, choice)
        if cfg.max_new_tokens > 0:
            by_name = self.factors()
            self.slot.set(compose_cat([by_name[n] for n, _ in choice], [w for _, w in choice]).pairs)
            routed.completion = greedy_completion(self.slot.model, self.tokenizer, prompt, cfg.max_new_tokens)
        return routed

    def factors(self) -> dict[str, Factors]:
        """``{brick name: factors}``."""
        return dict(zip(self.bset.names, self.bset.factors, strict=False))

    def evaluate(self, cfg: RouteConfig, status: Status) -> dict[str, dict[str, Any]]:
        """:func:`evaluate_routing` on ``cfg.per_domain`` test documents of each brick's domain."""
        from lmbricks.data import load_texts

        domain_of = {n: i.domain for n, i in zip(self.bset.names, self.bset.infos, strict=False) if i.domain}
        texts = {d: [t for t in load_texts(d, "test") if t.strip()] for d in domain_of.values()}
        status(f"routing {cfg.per_domain} held-out documents per domain")
        return evaluate_routing(
            self.slot,
            self.tokenizer,
            self.router,
            self.factors(),
            domain_of,
            texts,
            per_domain=cfg.per_domain,
            top_k=cfg.top_k,
            temperature=cfg.temperature,
        )


def route_bricks(
    cfg: RouteConfig, prompts: Sequence[str] = (), *, evaluate: bool = False, status: Status = _quiet
) -> RouteResult:
    """Route prompts (optionally generating with the routed bricks), or evaluate routing on held-out text.

    Each brick's centroid comes from the centroid cache (computed on first use, or again with
    ``cfg.refresh_centroids``); each prompt then costs one forward pass of the base to route.

    Args:
        cfg: the base, the bricks and the routing settings.
        prompts: the inputs to route (ignored with ``evaluate``, but still checked).
        evaluate: measure accuracy and perplexity on each brick domain's held-out documents instead.
        status: one-line progress messages.

    Returns:
        The :class:`RouteResult`.
    """
    if not evaluate and not prompts:
        raise ConfigError("give prompts to route, or --eval")
    if any(not p.strip() for p in prompts):
        raise ConfigError("empty prompt")
    bset = load_bricks(cfg.model, list(cfg.bricks) if cfg.bricks else None)
    model, tokenizer = load_base(bset)
    stats = CentroidStats()
    router = brick_router(bset, model, tokenizer, layer=cfg.layer, use_cache=not cfg.refresh_centroids, stats=stats)
    status(f"router: {stats.hits} centroids from the cache, {stats.computed} computed from training text")
    routing = _Routing(AdapterSlot(model, bset.rank * cfg.top_k, bset.modules), tokenizer, router, bset)
    if evaluate:
        return RouteResult(evaluation=routing.evaluate(cfg, status))
    routed = [routing.route(p, cfg) for p in prompts]
    routing.slot.clear()
    return RouteResult(prompts=routed)


__all__ = [
    "BrickInfo",
    "ComposeConfig",
    "ComposeResult",
    "LoraTrainConfig",
    "RouteConfig",
    "RouteResult",
    "RoutedPrompt",
    "compose_bricks",
    "configure",
    "route_bricks",
    "search_lorahub_weights",
    "train_brick",
    "update_brick",
]
