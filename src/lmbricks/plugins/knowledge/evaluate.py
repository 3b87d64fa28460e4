"""``plugins knowledge eval``: cloze accuracy and compute per question, with and without the knowledge.

Conditions: ``none`` (the base, the sentence alone), ``prompt`` (the document's training part before
the sentence; its key/value states are computed once per question and shared by the candidates),
``plugin`` (the document's plug-in, the sentence alone) and ``routed`` (the plug-in the BM25 index
picks for the masked sentence). A candidate's score is the log-likelihood of ``candidate + suffix``
given the prefix; the highest wins. Compute: tokens through the model and CPU seconds per question.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from lmbricks.plugins.knowledge.cloze import ClozeItem

CONDITIONS = ("none", "prompt", "plugin", "routed")


@dataclass
class Tally:
    """Correct answers, tokens and CPU seconds of one condition."""

    correct: int = 0
    items: int = 0
    tokens: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def row(self) -> dict[str, Any]:
        """Accuracy and per-question cost."""
        n = max(1, self.items)
        return {"accuracy": self.correct / n, "items": self.items, "tokens_per_question": self.tokens / n,
                "cpu_s_per_question": self.cpu_s / n, "wall_s_per_question": self.wall_s / n}  # fmt: skip


@torch.no_grad()
def score_item(model: Any, tokenizer: Any, item: ClozeItem, context: str | None) -> tuple[int, int]:
    """The chosen candidate's index and the tokens processed, for one item under one model.

    Args:
        model: a causal LM (with or without a plug-in).
        tokenizer: its tokenizer.
        item: the cloze item.
        context: text read before the sentence (its states are computed once and reused), or None.

    Returns:
        ``(chosen index, tokens through the model)``.
    """
    past, tokens, offset = None, 0, []
    if context is not None:
        offset = tokenizer.encode(context + "\n\n", add_special_tokens=False)
        past = model(input_ids=torch.tensor([offset]), use_cache=True).past_key_values
        tokens += len(offset)
    prefix = tokenizer.encode(item.prefix, add_special_tokens=False)
    scores = []
    for cand in item.candidates:
        ids = tokenizer.encode(item.prefix + cand + item.suffix, add_special_tokens=False)  # (T,)
        cut = max(1, _common(prefix, ids))
        run = torch.tensor([ids])
        logits = model(input_ids=run, past_key_values=copy.deepcopy(past), use_cache=past is not None).logits[0]
        tokens += len(ids)
        logp = torch.log_softmax(logits[:-1].float(), dim=-1)  # (T-1, V): position t predicts token t+1
        target = run[0, 1:]
        scores.append(float(logp[cut - 1 :].gather(1, target[cut - 1 :, None]).sum()))
    return int(torch.tensor(scores).argmax()), tokens


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class EvalTallies:
    """One :class:`Tally` per condition, and the routing hits."""

    by: dict[str, Tally] = field(default_factory=lambda: {c: Tally() for c in CONDITIONS})
    routed_right: int = 0

    def add(self, condition: str, item: ClozeItem, model: Any, tokenizer: Any, context: str | None = None) -> None:
        """Score ``item`` with ``model`` (see :func:`score_item`), timed, and count it under ``condition``."""
        cpu, wall = time.process_time(), time.perf_counter()
        chosen, tokens = score_item(model, tokenizer, item, context)
        t = self.by[condition]
        t.cpu_s += time.process_time() - cpu
        t.wall_s += time.perf_counter() - wall
        t.items += 1
        t.tokens += tokens
        t.correct += int(chosen == item.answer)
