"""Running few-shot conditions (shots x direct / chain of thought) and collecting scored results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lmbricks.eval.fewshot.generate import generate_batched, generate_cached
from lmbricks.eval.fewshot.normalise import extract_answer, is_correct
from lmbricks.eval.fewshot.prompts import build_prompt, stop_strings
from lmbricks.eval.fewshot.scoring import wilson_interval
from lmbricks.eval.fewshot.tasks import Task

DEFAULT_SHOTS = (0, 1, 2, 4, 8)
MAX_NEW_TOKENS = {("champ", False): 24, ("champ", True): 160, ("langid", False): 6, ("langid", True): 56}


def evaluate_condition(
    model: Any,
    tokenizer: Any,
    task: Task,
    shots: int,
    cot: bool,
    n: int | None = None,
    fmt: str = "plain",
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    keep_examples: int = 2,
) -> dict[str, Any]:
    """Score one (shots, mode) condition on the first ``n`` items of ``task``.

    Returns:
        ``{"shots", "cot", "format", "n", "correct", "accuracy", "ci95": [lo, hi], "items": [...],
        "examples": [...]}``; items hold each prediction, examples the first full prompts and outputs.
    """
    items = task.items[:n] if n else task.items
    prompts = [build_prompt(task, it, shots, cot, fmt, tokenizer) for it in items]
    budget = max_new_tokens or MAX_NEW_TOKENS.get((task.name, cot), 200 if cot else 24)
    from lmbricks.nn.model import LM

    stops = stop_strings(fmt, cot)
    if isinstance(model, LM):  # shared-prefix KV cache: demonstrations are computed once
        gens = generate_cached(model, tokenizer, prompts, budget, stops, on_item=on_batch)
    else:
        gens = generate_batched(model, tokenizer, prompts, budget, stops, batch_size=batch_size, on_batch=on_batch)
    records: list[dict[str, Any]] = []
    for it, gen in zip(items, gens, strict=True):
        pred = extract_answer(gen, cot)
        records.append(
            {"id": it.id, "answers": list(it.answers), "generation": gen, "prediction": pred,
             "correct": is_correct(pred, it.answers, task.kind)}
        )  # fmt: skip
    k = sum(r["correct"] for r in records)
    lo, hi = wilson_interval(k, len(records))
    return {
        "shots": shots,
        "cot": cot,
        "format": fmt,
        "n": len(records),
        "correct": k,
        "accuracy": k / len(records) if records else 0.0,
        "ci95": [lo, hi],
        "mean_prompt_chars": sum(len(p) for p in prompts) / max(len(prompts), 1),
        "items": records,
        "examples": [{"prompt": p, "output": r["generation"], "correct": r["correct"]}
                     for p, r in zip(prompts[:keep_examples], records[:keep_examples], strict=True)],
    }  # fmt: skip


def evaluate_fewshot(
    model: Any,
    tokenizer: Any,
    task: Task,
    shots: Sequence[int] = DEFAULT_SHOTS,
    modes: Sequence[bool] = (False, True),
    n: int | None = None,
    fmt: str = "plain",
    batch_size: int = 8,
    on_condition: Callable[[str, int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Every (shots, mode) condition of ``task``; also a majority-class / chance baseline.

    Args:
        on_condition: called with a description and the number of items before each condition.

    Returns:
        ``{"task", "format", "n_items", "chance", "conditions": [...]}``.
    """
    conditions = []
    for cot in modes:
        for k in shots:
            n_items = len(task.items[:n] if n else task.items)
            if on_condition is not None:
                on_condition(f"{task.name} {k}-shot {'CoT' if cot else 'direct'}", n_items)
            conditions.append(evaluate_condition(model, tokenizer, task, k, cot, n, fmt, batch_size, on_batch=on_batch))
    chance = 1 / len(task.labels) if task.labels else 0.0
    return {
        "task": task.name,
        "format": fmt,
        "n_items": conditions[0]["n"] if conditions else 0,
        "chance": chance,
        "conditions": conditions,
    }
