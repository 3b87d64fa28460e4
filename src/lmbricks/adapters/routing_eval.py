"""Measure routing: accuracy on held-out texts, and perplexity with routed, oracle and no bricks."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from lmbricks.adapters.compose import Factors, compose_cat
from lmbricks.adapters.hub_adapter import AdapterSlot
from lmbricks.adapters.route import Router, text_ids


@dataclass
class DomainRouting:
    """Routing results of one held-out domain (NLL summed in nats over ``tokens``)."""

    docs: int = 0
    correct: int = 0
    tokens: int = 0
    nll_none: float = 0.0
    nll_oracle: float = 0.0
    nll_routed: float = 0.0
    chosen: dict[str, int] = field(default_factory=dict)

    def add(self, choice: str, correct: bool, tokens: int, nll: tuple[float, float, float]) -> None:
        """Count one document: the first chosen brick, whether it is the domain's, its NLLs (none, oracle, routed)."""
        self.docs += 1
        self.correct += int(correct)
        self.tokens += tokens
        self.nll_none += nll[0]
        self.nll_oracle += nll[1]
        self.nll_routed += nll[2]
        self.chosen[choice] = self.chosen.get(choice, 0) + 1

    def row(self) -> dict[str, Any]:
        """Accuracy, perplexity with no, the oracle and the routed bricks, and how often each brick was chosen."""
        t = max(self.tokens, 1)
        return {
            "docs": self.docs,
            "accuracy": self.correct / max(self.docs, 1),
            "ppl_none": math.exp(self.nll_none / t),
            "ppl_oracle": math.exp(self.nll_oracle / t),
            "ppl_routed": math.exp(self.nll_routed / t),
            "chosen": dict(self.chosen),
        }


@torch.no_grad()
def _nll_and_hidden(model: Any, ids: torch.Tensor, layer: int) -> tuple[float, torch.Tensor]:
    out = model(input_ids=ids[None], output_hidden_states=True)
    logits = out.logits[0, :-1].float()  # (T-1, V)
    nll = float(F.cross_entropy(logits, ids[1:], reduction="sum"))
    return nll, out.hidden_states[layer][0].float().mean(dim=0)


@torch.no_grad()
def _nll(model: Any, ids: torch.Tensor) -> float:
    logits = model(input_ids=ids[None]).logits[0, :-1].float()
    return float(F.cross_entropy(logits, ids[1:], reduction="sum"))


@torch.no_grad()
def greedy_completion(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    """``max_new_tokens`` greedy tokens after ``prompt`` (no special tokens added), decoded."""
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.eos_token_id,
    )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def _score_document(
    slot: AdapterSlot,
    ids: torch.Tensor,
    router: Router,
    bricks: Mapping[str, Factors],
    oracle: str | None,
    top_k: int,
    temperature: float,
) -> tuple[str, tuple[float, float, float]]:
    """Route one document and score it: (first chosen brick, NLL with no brick, the oracle, the routed bricks).

    The routing embedding comes from the same base pass that scores "no brick"; the routed NLL is
    the oracle's when top-1 routing picks the oracle (the same model, computed once).
    """
    slot.clear()
    none, h = _nll_and_hidden(slot.model, ids, router.layer)
    choice = router.route(h, top_k=top_k, temperature=temperature)[0]
    nll_oracle = none
    if oracle is not None:
        slot.set(bricks[oracle])
        nll_oracle = _nll(slot.model, ids)
    if top_k == 1 and choice[0][0] == oracle:
        return choice[0][0], (none, nll_oracle, nll_oracle)
    slot.set(compose_cat([bricks[n] for n, _ in choice], [w for _, w in choice]).pairs)
    return choice[0][0], (none, nll_oracle, _nll(slot.model, ids))


def evaluate_routing(
    slot: AdapterSlot,
    tokenizer: Any,
    router: Router,
    bricks: Mapping[str, Factors],
    domain_of: Mapping[str, str],
    texts: Mapping[str, Sequence[str]],
    *,
    doc_tokens: int = 256,
    per_domain: int = 8,
    top_k: int = 1,
    temperature: float = 0.1,
    on_doc: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Route held-out documents and score them with no brick, the oracle brick and the routed bricks.

    The embedding used for routing comes from the same base forward pass that scores "no brick", so
    routing costs nothing extra. Each document is cut to ``doc_tokens`` tokens; NLL covers every
    token after the first.

    Args:
        slot: the base model with a writable adapter slot (rank >= top_k x the bricks' rank).
        tokenizer: its tokenizer.
        router: the fitted router (its names are keys of ``bricks``).
        bricks: ``{name: factors}``.
        domain_of: ``{brick name: its domain}`` (the oracle for a domain is its brick).
        texts: ``{domain: held-out documents}``.
        doc_tokens: tokens per document.
        per_domain: documents per domain.
        top_k, temperature: routing (see :meth:`Router.route`).
        on_doc: progress, called with the domain after each document.

    Returns:
        ``{domain: DomainRouting.row()}`` plus ``"all"`` with the token-weighted totals.
    """
    oracle_of = {d: n for n, d in domain_of.items()}
    results: dict[str, DomainRouting] = {}
    total = DomainRouting()
    for domain, docs in texts.items():
        res = results.setdefault(domain, DomainRouting())
        for doc in docs:
            if res.docs >= per_domain:
                break
            ids = text_ids(tokenizer, doc, doc_tokens)
            if ids.numel() < 16:
                continue
            first, nll = _score_document(slot, ids, router, bricks, oracle_of.get(domain), top_k, temperature)
            for r in (res, total):
                r.add(first, domain_of.get(first) == domain, ids.numel() - 1, nll)
            if on_doc is not None:
                on_doc(domain)
    slot.clear()
    return {**{d: r.row() for d, r in results.items()}, "all": total.row()}
