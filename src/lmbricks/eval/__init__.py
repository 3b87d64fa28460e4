"""Evaluation: perplexity and bits per byte by domain."""

from lmbricks.eval.domains import DEFAULT_BYTES, DEFAULT_DOMAINS, evaluate_domains, held_out_texts
from lmbricks.eval.perplexity import PplResult, evaluate_text, perplexity, score_tokens

__all__ = [
    "DEFAULT_BYTES",
    "DEFAULT_DOMAINS",
    "PplResult",
    "evaluate_domains",
    "evaluate_text",
    "held_out_texts",
    "perplexity",
    "score_tokens",
]
