"""Compare proxy-tuning with its members: held-out perplexity per alpha, a batched greedy decode, tokens/s.

:func:`compare_proxy` scores ``M1 + alpha (M3 - M2)`` on a text for several alphas, then decodes the
same prompts with the proxy (alpha 1), with M1 alone and with M3 alone, timing each (prompt pass
included). The tour's proxy section is this call plus its plots and sentences.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from lmbricks.proxy.decode import DecodeConfig, Member, ProxyOutput, proxy_generate
from lmbricks.proxy.score import ProxyScores, proxy_perplexity


@dataclass
class ProxyComparison:
    """What :func:`compare_proxy` measured.

    Attributes:
        scores: held-out perplexity of M1, M2, M3 and the proxy per alpha.
        prompts: the decoded prompts; new_tokens: tokens decoded per prompt.
        proxy, base, expert: the greedy decodes (proxy at alpha 1, M1 alone, M3 alone).
        seconds: ``ppl``, ``decode_proxy``, ``decode_base``, ``decode_expert``.
    """

    scores: ProxyScores
    prompts: list[str]
    new_tokens: int
    proxy: ProxyOutput
    base: ProxyOutput
    expert: ProxyOutput
    seconds: dict[str, float]

    def tokens_per_s(self) -> dict[str, float]:
        """Decoded tokens per second of M1 alone (``base``), M3 alone (``expert``) and the proxy."""
        n = len(self.prompts) * self.new_tokens
        s = self.seconds
        return {"base": n / s["decode_base"], "expert": n / s["decode_expert"], "proxy": n / s["decode_proxy"]}

    def proxy_equals_expert(self) -> bool:
        """The proxy decoded exactly M3's tokens (expected when M2 is M1 and alpha is 1)."""
        return self.proxy.tokens == self.expert.tokens


def _timed_decode(
    base: Member, prompts: list[str], n: int, expert: Member | None = None, anti: Member | None = None
) -> tuple[ProxyOutput, float]:
    t0 = time.perf_counter()
    res = proxy_generate(base, prompts, DecodeConfig(max_new_tokens=n, stop_at_eos=False), expert=expert, anti=anti)
    return res, time.perf_counter() - t0


def compare_proxy(
    base: Member,
    expert: Member,
    anti: Member,
    text: str,
    prompts: Sequence[str],
    new_tokens: int,
    alphas: Sequence[float],
) -> ProxyComparison:
    """Score the proxy on ``text`` per alpha and decode ``prompts`` with the proxy, M1 and M3.

    Args:
        base: M1, the model steered; expert: M3 (the tuned small model); anti: M2 (untuned).
        text: held-out text for the perplexities.
        prompts: decoded as one batch (greedy, ``new_tokens`` each, never stopping at EOS).
        new_tokens: tokens per prompt.
        alphas: the steering strengths scored.

    Returns:
        The :class:`ProxyComparison`.
    """
    prompts = list(prompts)
    t0 = time.perf_counter()
    scores = proxy_perplexity(base, expert, anti, text, alphas=alphas)
    t_ppl = time.perf_counter() - t0
    proxy_out, t_proxy = _timed_decode(base, prompts, new_tokens, expert, anti)
    base_out, t_base = _timed_decode(base, prompts, new_tokens)
    expert_out, t_expert = _timed_decode(expert, prompts, new_tokens)
    seconds = {"ppl": t_ppl, "decode_proxy": t_proxy, "decode_base": t_base, "decode_expert": t_expert}
    return ProxyComparison(scores, prompts, new_tokens, proxy_out, base_out, expert_out, seconds)
