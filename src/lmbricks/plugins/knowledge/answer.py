"""``plugins knowledge ask``: route a question to a plug-in by the BM25 index, plug it, answer greedily."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lmbricks.adapters.base import BaseModel, base_model, check_brick_base
from lmbricks.adapters.brick import read_brick
from lmbricks.errors import ConfigError
from lmbricks.plugins.knowledge.index import BM25Index
from lmbricks.plugins.knowledge.pipeline import Plugin, read_knowledge
from lmbricks.runtime import autocast, resolve_precision
from lmbricks.runtime.precision import RequestedPrecision


@dataclass(frozen=True)
class AskJob:
    """What to answer with what.

    Attributes:
        model: the base model (the plug-ins' recorded base; others are refused).
        plugin_dirs: knowledge plug-in directories to route over.
        question: the question text.
        route: pick the plug-in by the index (False: the base alone, unless ``plugin`` names one).
        plugin: force this plug-in (by name) instead of routing.
        max_new_tokens: answer length limit (greedy decoding).
        precision: auto (bf16 where native), bf16 or fp32.
    """

    model: str
    plugin_dirs: tuple[Path, ...]
    question: str
    route: bool = True
    plugin: str | None = None
    max_new_tokens: int = 48
    precision: RequestedPrecision = "auto"


@dataclass(frozen=True)
class AskResult:
    """The answer, the plug-in used (None: the base alone), the routing scores and the cost."""

    answer: str
    plugin: str | None
    scores: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    seconds: float = 0.0


def choose(plugins: dict[str, Plugin], index: BM25Index, job: AskJob) -> tuple[Plugin | None, dict[str, float]]:
    """The plug-in ``job`` asks for: forced by name, routed by ``index``, or none.

    Returns:
        The plug-in (None when routing is off or no document shares a word with the question) and the scores.

    Raises:
        ConfigError: ``job.plugin`` names no plug-in of the directories.
    """
    if job.plugin is not None:
        if job.plugin not in plugins:
            raise ConfigError(f"--plugin: no plug-in {job.plugin!r} (known: {', '.join(plugins)})")
        return plugins[job.plugin], {}
    if not job.route:
        return None, {}
    scores = index.scores(job.question)
    best = index.route(job.question, 1)
    return (plugins[best[0]] if best else None), scores


def gather(dirs: tuple[Path, ...]) -> tuple[dict[str, Plugin], BM25Index]:
    """The plug-ins of every directory and one index over all their documents (IDF over the union).

    Raises:
        ConfigError: no directory, or two directories hold plug-ins of one name.
        CheckpointError: a directory is not a knowledge plug-in directory.
    """
    if not dirs:
        raise ConfigError("--plugins: at least one knowledge plug-in directory is needed")
    plugins: dict[str, Plugin] = {}
    counts: dict[str, dict[str, int]] = {}
    for d in dirs:
        ks = read_knowledge(d)
        for p in ks.plugins:
            if p.name in plugins:
                raise ConfigError(f"--plugins: plug-in {p.name!r} is in {plugins[p.name].path.parent} and {d}")
            plugins[p.name] = p
            counts[p.name] = dict(ks.index.counts[p.name])
    return plugins, BM25Index(counts)


def _check(plugin: Plugin, base: BaseModel) -> None:
    info = read_brick(plugin.path)
    check_brick_base(info.name, info.base_sha256, info.base_model, base, info.base_identity)


def ask_knowledge(job: AskJob) -> AskResult:
    """Answer ``job.question`` greedily with the chosen plug-in plugged in (checked against the base first).

    Args:
        job: the question, the plug-in directories and how to choose.

    Returns:
        The :class:`AskResult` (the answer without the prompt).
    """
    from lmbricks.hub import load_hf_model
    from lmbricks.plugins.knowledge.plug import plugged

    if not job.question.strip():
        raise ConfigError("QUESTION: empty question")
    plugins, index = gather(job.plugin_dirs)
    plugin, scores = choose(plugins, index, job)
    base = base_model(job.model)
    if plugin is not None:
        _check(plugin, base)  # before loading the model
    model, tokenizer = load_hf_model(base.path)
    ids = tokenizer(job.question, return_tensors="pt").input_ids  # (1, T)
    start = time.perf_counter()
    precision = resolve_precision(job.precision, "cpu")
    with autocast(precision, "cpu"):
        if plugin is None:
            out = model.generate(ids, max_new_tokens=job.max_new_tokens, do_sample=False)
        else:
            with plugged(model, plugin.path, base) as m:
                out = m.generate(input_ids=ids, max_new_tokens=job.max_new_tokens, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    name = None if plugin is None else plugin.name
    return AskResult(answer.strip(), name, scores, int(ids.shape[1]), time.perf_counter() - start)
