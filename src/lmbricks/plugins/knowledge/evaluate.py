"""``plugins knowledge eval``: cloze accuracy and compute per question, with and without the knowledge.

Conditions: ``none`` (the base, the sentence alone), ``prompt`` (the document's training part before
the sentence; its key/value states are computed once per question and shared by the candidates),
``plugin`` (the document's plug-in, the sentence alone) and ``routed`` (the plug-in the BM25 index
picks for the masked sentence). A candidate's score is the log-likelihood of ``candidate + suffix``
given the prefix; the highest wins. Compute: tokens through the model and CPU seconds per question.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from lmbricks.eval.fewshot.scoring import wilson_interval
from lmbricks.hub.hf_compat import output_cache, with_cache
from lmbricks.plugins.knowledge.cloze import ClozeItem

CONDITIONS = ("none", "prompt", "plugin", "routed")


@dataclass
class Tally:
    """Correct answers (and which items), tokens and CPU seconds of one condition."""

    correct: int = 0
    items: int = 0
    tokens: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    outcomes: list[bool] = field(default_factory=list)  # one per item, in item order
    last: tuple[bool, int, float, float] = (False, 0, 0.0, 0.0)  # the last item's (right, tokens, CPU s, wall s)

    def count(self, right: bool, tokens: int, cpu_s: float, wall_s: float) -> None:
        """Add one item's outcome and cost."""
        self.correct, self.items, self.tokens = self.correct + right, self.items + 1, self.tokens + tokens
        self.cpu_s, self.wall_s = self.cpu_s + cpu_s, self.wall_s + wall_s
        self.outcomes.append(right)
        self.last = (right, tokens, cpu_s, wall_s)

    def row(self) -> dict[str, Any]:
        """Accuracy with its Wilson 95% interval, and per-question cost."""
        n = max(1, self.items)
        return {"accuracy": self.correct / n, "ci95": list(wilson_interval(self.correct, self.items)),
                "correct": self.correct, "items": self.items, "tokens_per_question": self.tokens / n,
                "cpu_s_per_question": self.cpu_s / n, "wall_s_per_question": self.wall_s / n}  # fmt: skip


@dataclass
class ContextStates:
    """A document's key/value states after reading it, and what reading it cost (charged per question)."""

    past: Any
    tokens: int
    cpu_s: float
    wall_s: float


@torch.no_grad()
def encode_context(model: Any, tokenizer: Any, context: str) -> ContextStates:
    """Run ``context`` (and a blank line) through the model once, timed: its cache for the questions after it."""
    cpu, wall = time.process_time(), time.perf_counter()
    ids = tokenizer.encode(context + "\n\n", add_special_tokens=False)
    past = output_cache(model(input_ids=torch.tensor([ids]), use_cache=True))
    return ContextStates(past, len(ids), time.process_time() - cpu, time.perf_counter() - wall)


@torch.no_grad()
def score_item(model: Any, tokenizer: Any, item: ClozeItem, context: str | ContextStates | None) -> tuple[int, int]:
    """The chosen candidate's index and the tokens processed, for one item under one model.

    Args:
        model: a causal LM (with or without a plug-in).
        tokenizer: its tokenizer.
        item: the cloze item.
        context: text read before the sentence (encoded here, once for all candidates), its states
            from :func:`encode_context`, or None.

    Returns:
        ``(chosen index, tokens through the model)``; the context's tokens count either way.
    """
    states = encode_context(model, tokenizer, context) if isinstance(context, str) else context
    past, tokens = (None, 0) if states is None else (states.past, states.tokens)
    prefix = tokenizer.encode(item.prefix, add_special_tokens=False)
    scores = []
    for cand in item.candidates:
        ids = tokenizer.encode(item.prefix + cand + item.suffix, add_special_tokens=False)  # (T,)
        cut = max(1, _common(prefix, ids))
        run = torch.tensor([ids])
        logits = model(input_ids=run, use_cache=past is not None, **with_cache(copy.deepcopy(past))).logits[0]
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
    _context: tuple[int, str, ContextStates] | None = None  # (model id, text, states): the last context encoded

    def add(self, condition: str, item: ClozeItem, model: Any, tokenizer: Any, context: str | None = None) -> None:
        """Score ``item`` with ``model`` (see :func:`score_item`), timed, and count it under ``condition``.

        A ``context`` is encoded once while consecutive items share it; every item is charged the
        tokens and the measured time of that encoding, as if it had read the document itself.
        """
        extra_cpu = extra_wall = 0.0
        states = None
        if context is not None:
            if self._context is None or self._context[:2] != (id(model), context):
                self._context = (id(model), context, encode_context(model, tokenizer, context))
            states = self._context[2]
            extra_cpu, extra_wall = states.cpu_s, states.wall_s
        cpu, wall = time.process_time(), time.perf_counter()
        chosen, tokens = score_item(model, tokenizer, item, states)
        self.by[condition].count(
            chosen == item.answer,
            tokens,
            time.process_time() - cpu + extra_cpu,
            time.perf_counter() - wall + extra_wall,
        )

    def repeat(self, source: str, condition: str) -> None:
        """Count under ``condition`` the last item of ``source`` again: the same model on the same item
        (the routed plug-in is the item's own), so the same answer at the same measured cost."""
        self.by[condition].count(*self.by[source].last)


def sign_test(gained: int, lost: int) -> float:
    """Two-sided exact sign test of ``gained`` against ``lost`` discordant pairs (ties dropped): the p-value.

    Args:
        gained: items the compared condition answers and the reference does not.
        lost: the reverse.

    Returns:
        ``P(|X - n/2| >= |gained - n/2|)`` for ``X ~ Binomial(n, 1/2)``, ``n = gained + lost``; 1 when n = 0.
    """
    n, k = gained + lost, max(gained, lost)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n) if n else 1.0


def paired(a: Tally, b: Tally) -> dict[str, Any]:
    """Items ``a`` answers and ``b`` does not (``gained``), the reverse (``lost``), and their sign test.

    Args:
        a: the condition compared (e.g. the plug-in).
        b: the reference (e.g. no document), scored on the same items in the same order.

    Returns:
        ``{"gained": int, "lost": int, "p_sign": float}`` (:func:`sign_test` of the two counts).
    """
    pairs = list(zip(a.outcomes, b.outcomes, strict=True))
    gained, lost = sum(x and not y for x, y in pairs), sum(y and not x for x, y in pairs)
    return {"gained": gained, "lost": lost, "p_sign": sign_test(gained, lost)}
