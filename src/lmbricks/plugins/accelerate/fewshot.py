"""Few-shot accuracy with acceleration plug-ins, against the plain model and a prompt truncated to the same cost.

Every item is asked in three ways per plug-in, with the project's few-shot prompts and scoring
(:mod:`lmbricks.eval.fewshot`: ``build_prompt``, its stop strings, ``extract_answer``, ``is_correct``):

- ``plain``: the base model reads the whole prompt;
- ``r=R``: the prompt's groups are compressed after layer l, and the answer is decoded uncompressed
  (:func:`lmbricks.plugins.accelerate.generate.greedy`);
- ``truncated r=R``: the base model reads only the prompt's last tokens, as many as cost the plug-in's
  layer-token work on the whole prompt (:func:`equal_cost_tokens`).

All conditions decode greedily with the same cached decoder, so they differ only in how the prompt
is read. The paired counts against ``plain`` (items gained, items lost) carry the comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lmbricks.eval.fewshot.generate import cut_at_stops
from lmbricks.eval.fewshot.normalise import extract_answer, is_correct
from lmbricks.eval.fewshot.prompts import build_prompt, stop_strings
from lmbricks.eval.fewshot.run import answer_budget
from lmbricks.eval.fewshot.scoring import wilson_interval
from lmbricks.eval.fewshot.tasks import Task
from lmbricks.nn.model import LM
from lmbricks.plugins.accelerate.forward import split_point
from lmbricks.plugins.accelerate.generate import greedy
from lmbricks.plugins.accelerate.layers import AcceleratePlugin
from lmbricks.plugins.knowledge.evaluate import sign_test


def equal_cost_tokens(model: LM, plugin: AcceleratePlugin, length: int, keep_last: int = 1) -> int:
    """Prompt tokens the plain model may read for the plug-in's layer-token work on ``length`` tokens (>= 1)."""
    L, low = model.cfg.num_layers, plugin.layer
    P = split_point(length, plugin.ratio, keep_last)
    work = low * length + (L - low) * (P // plugin.ratio + length - P)
    return min(length, max(1, round(work / L)))


def _answer(model: LM, tokenizer: Any, plugin: AcceleratePlugin | None, ids: list[int], budget: int,
            stops: Sequence[str]) -> str:  # fmt: skip
    def stop(out: list[int]) -> bool:
        text = tokenizer.decode(out, skip_special_tokens=True)
        return any(s in text for s in stops) or out[-1] == tokenizer.eos_token_id

    out = greedy(model, plugin, torch.tensor([ids]), budget, stop=stop)
    return cut_at_stops(tokenizer.decode(out, skip_special_tokens=True), stops)


def _summary(name: str, hits: list[bool], plain: list[bool], read: list[int]) -> dict[str, Any]:
    k, n = sum(hits), len(hits)
    gained = sum(h and not p for h, p in zip(hits, plain, strict=True))
    lost = sum(p and not h for h, p in zip(hits, plain, strict=True))
    return {"condition": name, "correct": k, "n": n, "accuracy": k / n if n else 0.0,
            "ci95": list(wilson_interval(k, n)), "mean_cost_tokens": sum(read) / max(n, 1),
            "gained_vs_plain": gained, "lost_vs_plain": lost, "p_sign": sign_test(gained, lost)}  # fmt: skip


def fewshot_conditions(
    model: LM, tokenizer: Any, plugins: Sequence[AcceleratePlugin], task: Task, shots: int, n: int,
    on_item: Callable[[int], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Score the first ``n`` items of ``task`` at ``shots`` demonstrations, direct answers, plain format.

    Returns:
        ``{"task", "shots", "n", "mean_prompt_tokens", "conditions": [...], "items": [...]}``; each
        condition has its accuracy, Wilson interval, mean tokens read and paired counts against plain.
    """
    budget, stops = answer_budget(task.name, False, "plain"), stop_strings("plain", False)
    names = ["plain"] + [f"{kind}r={p.ratio}" for p in plugins for kind in ("", "truncated ")]
    hits: dict[str, list[bool]] = {k: [] for k in names}
    read: dict[str, list[int]] = {k: [] for k in names}
    items, lengths = [], []
    for i, item in enumerate(task.items[:n]):
        ids = tokenizer(build_prompt(task, item, shots, False), add_special_tokens=False)["input_ids"]
        lengths.append(len(ids))
        runs: list[tuple[str, AcceleratePlugin | None, list[int]]] = [("plain", None, ids)]
        for p in plugins:
            cut = equal_cost_tokens(model, p, len(ids))
            runs += [(f"r={p.ratio}", p, ids), (f"truncated r={p.ratio}", None, ids[len(ids) - cut :])]
        record: dict[str, Any] = {"id": item.id, "answers": list(item.answers)}
        for name, plugin, prompt in runs:
            pred = extract_answer(_answer(model, tokenizer, plugin, prompt, budget, stops), False)
            hits[name].append(is_correct(pred, item.answers, task.kind, task.labels))
            read[name].append(len(prompt) if plugin is None else equal_cost_tokens(model, plugin, len(ids)))
            record[name] = {"prediction": pred, "correct": hits[name][-1]}
        items.append(record)
        if on_item is not None:
            on_item(i + 1)
    mean_prompt = sum(lengths) / max(len(lengths), 1)
    return {"task": task.name, "shots": shots, "n": len(items), "mean_prompt_tokens": mean_prompt,
            "conditions": [_summary(k, hits[k], hits["plain"], read[k]) for k in names], "items": items}  # fmt: skip
