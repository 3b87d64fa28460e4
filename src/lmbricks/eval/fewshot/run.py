"""Running few-shot conditions (shots x direct / chain of thought) and collecting scored results."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from lmbricks.eval.fewshot.generate import generate_batched, generate_cached
from lmbricks.eval.fewshot.normalise import extract_answer, is_correct, label_of, normalise
from lmbricks.eval.fewshot.prompts import build_prompt, stop_strings
from lmbricks.eval.fewshot.scoring import wilson_interval
from lmbricks.eval.fewshot.tasks import Task

DEFAULT_SHOTS = (0, 1, 2, 4, 8)
# Generation budgets (new tokens) by (task, chain of thought, prompt format). Plain direct answers
# are one short line; a chat model answers direct questions with a sentence ("The language of the
# text is German."), which 6 tokens cut before the label, so chat budgets are larger.
MAX_NEW_TOKENS = {
    ("champ", False, "plain"): 24, ("champ", True, "plain"): 128,
    ("langid", False, "plain"): 6, ("langid", True, "plain"): 56,
    ("champ", False, "chat"): 48, ("champ", True, "chat"): 192,
    ("langid", False, "chat"): 20, ("langid", True, "chat"): 72,
}  # fmt: skip


def answer_budget(task: str, cot: bool, fmt: str) -> int:
    """New tokens allowed for an answer of ``task`` in this mode and prompt format."""
    default = (200 if cot else 24) * (2 if fmt == "chat" and not cot else 1)
    return MAX_NEW_TOKENS.get((task, cot, fmt), default)


def constant_baseline(task: Task, n: int | None = None) -> dict[str, Any]:
    """The best accuracy of answering every item with one constant (the commonest gold answer).

    On CHAMP six of the 31 gold answers are "No": a model that always says "No" scores 6/31 without
    solving anything, which is the floor a few-shot score must beat to mean more than format.
    """
    items = task.items[:n] if n else task.items
    counts = Counter(normalise(it.answer) for it in items)
    answer, k = counts.most_common(1)[0] if counts else ("", 0)
    lo, hi = wilson_interval(k, len(items))
    return {"answer": answer, "correct": k, "n": len(items), "accuracy": k / max(len(items), 1), "ci95": [lo, hi]}


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
        ``{"shots", "cot", "format", "n", "correct", "accuracy", "ci95": [lo, hi], "max_new_tokens",
        "top_predictions", "distinct_predictions", "correct_by_answer", "items": [...],
        "examples": [...]}``; items hold each prediction, examples the first full prompts and outputs;
        ``top_predictions`` are the three commonest normalised answers with their counts.
    """
    items = task.items[:n] if n else task.items
    prompts = [build_prompt(task, it, shots, cot, fmt, tokenizer) for it in items]
    budget = max_new_tokens or answer_budget(task.name, cot, fmt)
    gens = _generate(model, tokenizer, prompts, budget, stop_strings(fmt, cot), batch_size, on_batch)
    records: list[dict[str, Any]] = [
        {"id": it.id, "answers": list(it.answers), "generation": gen, "prediction": (pred := extract_answer(gen, cot)),
         "correct": is_correct(pred, it.answers, task.kind, task.labels)}
        for it, gen in zip(items, gens, strict=True)
    ]  # fmt: skip
    k = sum(r["correct"] for r in records)
    canon = [label_of(r["prediction"], task.labels) if task.kind == "label" else normalise(r["prediction"])
             for r in records]  # fmt: skip
    counts = Counter(canon)
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
        "max_new_tokens": budget,
        # what the model answers, whatever the question: one answer repeated means format, not skill
        "top_predictions": [[a, c] for a, c in counts.most_common(3)],
        "distinct_predictions": len(counts),
        "correct_by_answer": dict(Counter(c for c, r in zip(canon, records, strict=True) if r["correct"])),
        "items": records,
        "examples": [{"prompt": p, "output": r["generation"], "correct": r["correct"]}
                     for p, r in zip(prompts[:keep_examples], records[:keep_examples], strict=True)],
    }  # fmt: skip


def _generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    budget: int,
    stops: Sequence[str],
    batch_size: int,
    on_batch: Callable[[int], None] | None,
) -> list[str]:
    """Greedy continuations: the shared-prefix KV cache for an ``lmbricks.nn.LM`` (demonstrations are
    computed once), batched ``generate`` for a transformers model."""
    from lmbricks.nn.model import LM

    if isinstance(model, LM):
        return generate_cached(model, tokenizer, prompts, budget, stops, on_item=on_batch, batch_size=batch_size)
    return generate_batched(model, tokenizer, prompts, budget, stops, batch_size=batch_size, on_batch=on_batch)


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
        ``{"task", "format", "n_items", "chance", "constant_baseline", "conditions": [...]}``.
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
        "constant_baseline": constant_baseline(task, n),
        "conditions": conditions,
    }


def langid_curve(
    model: Any, tokenizer: Any, shots: Sequence[int], per_language: int, max_items: int, max_chars: int
) -> dict[str, Any]:
    """Direct-answer accuracy on ``langid`` for each number of shots (the first ``max_items`` items).

    Args:
        model, tokenizer: the LM under test.
        shots: numbers of demonstrations, one condition each.
        per_language: langid items per language (14 languages).
        max_items: the first N interleaved items are asked.
        max_chars: paragraph length.

    Returns:
        ``{"task": "langid", "chance", "conditions": [{"shots", "correct", "n", "accuracy", "ci95",
        "top_prediction", "distinct_predictions"}, ...], "demo_labels"}``.
    """
    from lmbricks.eval.fewshot.tasks import langid_task

    task = langid_task(per_language=per_language, max_chars=max_chars)
    rows = []
    for k in shots:
        c = evaluate_condition(model, tokenizer, task, k, cot=False, n=max_items, keep_examples=1)
        rows.append(
            {"shots": k, "correct": c["correct"], "n": c["n"], "accuracy": c["accuracy"], "ci95": c["ci95"],
             "top_prediction": c["top_predictions"][0] if c["top_predictions"] else ["", 0],
             "distinct_predictions": c["distinct_predictions"]}
        )  # fmt: skip
    return {"task": "langid", "chance": 1 / len(task.labels), "conditions": rows,
            "demo_labels": [d.answer for d in task.demos[: max(shots)]]}  # fmt: skip
