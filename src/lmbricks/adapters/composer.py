"""Compose bricks from disk into an adapter directory or a merged model (the ``compose`` command's engine)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmbricks.adapters.brick import brick_record, save_factors
from lmbricks.adapters.compose import compose
from lmbricks.adapters.session import load_base, load_bricks
from lmbricks.checkpoint import atomic_directory, check_output, write_provenance
from lmbricks.checkpoint.provenance import reference_name
from lmbricks.errors import ConfigError
from lmbricks.hub import reference_paths


def search_lorahub_weights(
    bset: Any,
    domain: str,
    *,
    examples: int = 5,
    budget: int = 40,
    seed: int = 42,
    max_tokens: int = 128,
    on_eval: Callable[[int, float], None] | None = None,
) -> Any:
    """Run LoraHub's search for ``bset``'s bricks on ``examples`` validation documents of ``domain``."""
    from lmbricks.adapters.hub_adapter import AdapterSlot
    from lmbricks.adapters.lorahub import LoraHubSettings, example_batches, lorahub_search
    from lmbricks.data import load_texts

    model, tokenizer = load_base(bset)
    slot = AdapterSlot(model, bset.rank, bset.modules)
    texts = [t for t in load_texts(domain, "validation") if t.strip()][:examples]
    batches = example_batches(tokenizer, texts, max_tokens)
    return lorahub_search(slot, bset.factors, batches, LoraHubSettings(budget=budget, seed=seed), on_eval)


def compose_bricks(
    model_ref: str | Path,
    bricks: Sequence[str | Path],
    out: str | Path,
    *,
    method: str = "cat",
    weights: Sequence[float] | None = None,
    rank: int | None = None,
    density: float | None = None,
    domain: str | None = None,
    examples: int = 5,
    budget: int = 40,
    seed: int = 42,
    merge: bool = False,
    force: bool = False,
    command: str = "lmbricks.adapters.compose_bricks",
    on_eval: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Compose bricks and write the result.

    Args:
        model_ref: the base model every brick must belong to.
        bricks: brick directories or catalogue names.
        out: output: a PEFT adapter directory, or with ``merge`` a full model directory.
        method: ``cat``, ``svd``, ``linear``, ``ties``, ``dare`` or ``lorahub``.
        weights: per-brick weights; for ``lorahub`` without weights they are searched on
            ``examples`` validation documents of ``domain``.
        rank, density, seed: method settings (see :func:`lmbricks.adapters.compose.compose`).
        merge: merge the update into the base weights instead of writing an adapter.
        force: replace ``out``.

    Returns:
        ``{"weights", "rel_error", "lorahub"}`` (the LoraHub search result when one ran).
    """
    out = check_output(out, [*reference_paths(model_ref), *(Path(b) for b in bricks)], force)
    bset = load_bricks(model_ref, list(bricks))
    check_output(out, [bset.base.path, *(i.path for i in bset.infos)], force)  # catalogue names resolved
    search = None
    if method == "lorahub" and weights is None:
        if domain is None:
            raise ConfigError("lorahub without --weights needs --domain for its few-shot examples")
        search = search_lorahub_weights(bset, domain, examples=examples, budget=budget, seed=seed, on_eval=on_eval)
        weights = search.weights
    result = compose(method, bset.factors, weights, rank=rank, density=density, seed=seed)
    used = (
        list(weights)
        if weights is not None
        else ([1.0 / len(bricks)] * len(bricks) if method == "lorahub" else [1.0] * len(bricks))
    )
    recipe = {
        "compose": {
            "method": method,
            "bricks": [reference_name(i.path, out) for i in bset.infos],
            "weights": used,
            "rank": rank,
            "density": density,
            "seed": seed,
            "domain": domain,
            "lorahub": None
            if search is None
            else {"loss": search.loss, "objective": search.objective, "budget": budget, "examples": examples},
        }
    }
    inputs: dict[str, Path] = {
        "base": bset.base.path,
        **{f"brick{i}": info.path for i, info in enumerate(bset.infos)},
    }
    record = brick_record(
        name=out.name,
        base_model=bset.base.name,
        base_sha256=bset.base.sha256,
        base_identity=bset.base.identity,
        rank=next(iter(result.pairs.values())).rank,
        alpha=float(next(iter(result.pairs.values())).rank),
        targets=sorted({m.rsplit(".", 1)[-1] for m in result.pairs}),
        domain=domain,
        composed_from=[i.name for i in bset.infos],
        weights=used,
        rel_error=result.rel_error,
    )
    if merge:
        from lmbricks.adapters.merge_into import save_merged

        save_merged(
            bset.base.path,
            result.pairs,
            out,
            command=command,
            recipe=recipe,
            inputs=inputs,
            bricks=record,
            force=force,
        )
    else:
        with atomic_directory(out, force=force, inputs=inputs) as tmp:
            save_factors(tmp, result.pairs, base_model=bset.base.name)
            write_provenance(tmp, command=command, recipe=recipe, inputs=inputs, bricks=record)
    return {"weights": used, "rel_error": result.rel_error, "lorahub": search}
