"""Proxy-tuning decoding (arXiv 2401.08565): steer a base model with the difference of two others.

At every step ``logits = l_base + alpha * (l_expert - l_anti)`` over the shared vocabulary, then the
usual processors (repetition penalty, temperature, top-k, top-p) and greedy choice or sampling.
Each model keeps its own KV cache and, when asked, formats the prompt with its own chat template;
prompts are batched with left padding (each model pads its own encoding).

:class:`ProxyDecoder` is the Python API: ``start`` runs the prompts, ``step`` decodes one token for
every sequence; :func:`proxy_generate` loops them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from pydantic import Field

from lmbricks.config import settings
from lmbricks.errors import ConfigError
from lmbricks.proxy.vocab import shared_vocab_size


def combine_logits(base: torch.Tensor, expert: torch.Tensor, anti: torch.Tensor, alpha: float) -> torch.Tensor:
    """``base + alpha * (expert - anti)`` in fp32; all (B, V)."""
    return base.float() + alpha * (expert.float() - anti.float())


@settings
class DecodeConfig:
    """Sampling settings; ``temperature == 0`` means greedy. A wrong value is a ConfigError naming the field."""

    alpha: float = 1.0
    max_new_tokens: Annotated[int, Field(ge=1)] = 64
    temperature: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    top_k: Annotated[int, Field(ge=0)] = 0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    repetition_penalty: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    seed: int = 0
    use_cache: bool = True
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if not math.isfinite(self.alpha):  # the steering strength: a NaN would poison every logit
            raise ConfigError(f"alpha must be a finite number, got {self.alpha}")


@dataclass
class Member:
    """One model of the ensemble with its tokenizer; ``chat`` formats prompts with its chat template."""

    model: Any
    tokenizer: Any
    chat: bool = False


def encode_prompts(tokenizer: Any, prompts: Sequence[str], chat: bool) -> list[list[int]]:
    """Token ids per prompt (chat template with a generation prompt when ``chat``)."""
    out = []
    for p in prompts:
        if chat:
            if getattr(tokenizer, "chat_template", None) is None:
                raise ConfigError("--chat was asked but the tokenizer has no chat template")
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True
            )
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
        else:
            ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        out.append([int(i) for i in ids])
    return out


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (B, L), padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


@dataclass
class _Stream:
    """One model's running state: its token ids, mask and KV cache."""

    member: Member
    ids: torch.Tensor  # (B, L)
    mask: torch.Tensor  # (B, L)
    cache: Any = None
    fresh: int = 0  # tokens at the end of ids not yet fed to the model

    @torch.no_grad()
    def logits(self, use_cache: bool) -> torch.Tensor:
        """Next-token logits (B, V) after feeding the pending tokens (or everything without a cache)."""
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)  # (B, L): positions ignore the left padding
        if use_cache:
            from transformers import DynamicCache

            from lmbricks.hub.hf_compat import output_cache, with_cache

            if self.cache is None:
                self.cache = DynamicCache()
            n = self.fresh
            out = self.member.model(
                input_ids=self.ids[:, -n:],
                attention_mask=self.mask,
                position_ids=pos[:, -n:],
                use_cache=True,
                **with_cache(self.cache),
            )
            self.cache = output_cache(out)
        else:
            out = self.member.model(input_ids=self.ids, attention_mask=self.mask, position_ids=pos, use_cache=False)
        self.fresh = 0
        return out.logits[:, -1]  # (B, V)

    def append(self, tokens: torch.Tensor) -> None:
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(tokens)[:, None]], dim=1)
        self.fresh += 1


def repetition_penalty(scores: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty over the real tokens of each row only (left padding is not "seen").

    Args:
        scores: (B, V) next-token logits.
        ids: (B, L) the sequences so far, left padded.
        mask: (B, L) 1 on real tokens, 0 on padding.
        penalty: a seen token's positive logit is divided by it, a negative one multiplied.

    Returns:
        (B, V) the penalised logits (a new tensor).
    """
    seen = torch.zeros_like(scores, dtype=torch.long).scatter_add_(1, ids, mask.long()) > 0  # (B, V)
    return torch.where(seen, torch.where(scores > 0, scores / penalty, scores * penalty), scores)


def _processors(cfg: DecodeConfig) -> Any:
    """The sampling warpers (temperature, top-k, top-p); the repetition penalty is applied apart."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    procs = LogitsProcessorList()
    if cfg.temperature > 0:
        if cfg.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(cfg.temperature))
        if cfg.top_k > 0:
            procs.append(TopKLogitsWarper(cfg.top_k))
        if cfg.top_p < 1.0:
            procs.append(TopPLogitsWarper(cfg.top_p))
    return procs


@dataclass
class ProxyOutput:
    """Generated token ids (EOS included when reached, nothing after it) and their text, per prompt."""

    tokens: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


class ProxyDecoder:
    """Decode ``base + alpha * (expert - anti)``; with no expert/anti it decodes the base alone.

    Args:
        base: the model to steer (M1).
        expert: the tuned small model (M3), or None.
        anti: its untuned counterpart (M2), or None (both or neither).
        cfg: decoding settings.

    Raises:
        ConfigError: vocabularies differ (first differing token named), only one of expert/anti given.
    """

    def __init__(self, base: Member, expert: Member | None, anti: Member | None, cfg: DecodeConfig) -> None:
        if (expert is None) != (anti is None):
            raise ConfigError("give both an expert and an anti-expert, or neither")
        self.members = {"base": base, **({"expert": expert, "anti-expert": anti} if expert and anti else {})}
        dims = {role: int(m.model.get_output_embeddings().weight.shape[0]) for role, m in self.members.items()}
        others = {role: m.tokenizer for role, m in self.members.items() if role != "base"}
        self.vocab = shared_vocab_size(base.tokenizer, others, dims)
        self.cfg = cfg
        self.procs = _processors(cfg)
        tok = base.tokenizer
        self.eos = tok.eos_token_id
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else (self.eos if self.eos is not None else 0)
        self.streams: dict[str, _Stream] = {}
        self.generated: torch.Tensor = torch.empty(0, 0, dtype=torch.long)
        self.done: torch.Tensor = torch.empty(0, dtype=torch.bool)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.last_logits: torch.Tensor | None = None  # combined logits of the last step (B, V), for checks

    def start(self, prompts: Sequence[str]) -> torch.Tensor:
        """Encode prompts for each model, run them, and choose the first token.

        Returns:
            (B,) the first generated token of each prompt.

        Raises:
            ConfigError: no prompts, or an empty prompt.
        """
        if not prompts:
            raise ConfigError("no prompts to decode")
        for i, p in enumerate(prompts):
            if not p or not p.strip():
                raise ConfigError(f"prompt {i} is empty")
        self.streams = {}
        for role, m in self.members.items():
            ids, mask = left_pad(encode_prompts(m.tokenizer, prompts, m.chat), self.pad)
            self.streams[role] = _Stream(m, ids, mask, fresh=ids.shape[1])
        self.generated = torch.empty(len(prompts), 0, dtype=torch.long)
        self.done = torch.zeros(len(prompts), dtype=torch.bool)
        return self._choose()

    def next_logits(self) -> torch.Tensor:
        """The combined next-token logits (B, V_shared), fp32, before processors."""
        logits = {role: s.logits(self.cfg.use_cache)[:, : self.vocab] for role, s in self.streams.items()}
        if "expert" not in logits:
            return logits["base"].float()
        return combine_logits(logits["base"], logits["expert"], logits["anti-expert"], self.cfg.alpha)

    def _choose(self) -> torch.Tensor:
        scores = self.next_logits()
        self.last_logits = scores
        base = self.streams["base"]
        if self.cfg.repetition_penalty != 1.0:
            scores = repetition_penalty(scores, base.ids, base.mask, self.cfg.repetition_penalty)
        if len(self.procs):
            scores = self.procs(base.ids, scores)
        if self.cfg.temperature > 0:
            probs = torch.softmax(scores, dim=-1)
            tokens = torch.multinomial(probs, 1, generator=self.gen)[:, 0]
        else:
            tokens = scores.argmax(dim=-1)
        tokens = torch.where(self.done, torch.full_like(tokens, self.pad), tokens)
        for s in self.streams.values():
            s.append(tokens)
        self.generated = torch.cat([self.generated, tokens[:, None]], dim=1)
        if self.cfg.stop_at_eos and self.eos is not None:
            self.done |= tokens == self.eos
        return tokens

    def step(self) -> torch.Tensor:
        """Decode one more token for every sequence (finished ones get padding). Returns (B,)."""
        return self._choose()

    @property
    def finished(self) -> bool:
        return bool(self.done.all())

    def output(self) -> ProxyOutput:
        """Tokens per prompt, cut after EOS, and their decoded text."""
        out = ProxyOutput()
        tok = self.members["base"].tokenizer
        for row in self.generated.tolist():
            if self.cfg.stop_at_eos and self.eos in row:
                row = row[: row.index(self.eos) + 1]
            out.tokens.append(row)
            out.texts.append(str(tok.decode(row, skip_special_tokens=True)))
        return out


def proxy_generate(
    base: Member,
    prompts: Sequence[str],
    cfg: DecodeConfig = DecodeConfig(),
    expert: Member | None = None,
    anti: Member | None = None,
    on_token: Callable[[torch.Tensor], None] | None = None,
) -> ProxyOutput:
    """Generate up to ``cfg.max_new_tokens`` tokens per prompt with proxy-tuning.

    Args:
        base: M1, the model steered.
        prompts: the prompts (batched with left padding).
        cfg: alpha and sampling settings.
        expert: M3 (the tuned small model).
        anti: M2 (the same small model untuned).
        on_token: called with the (B,) tokens of each step (streaming).

    Returns:
        The :class:`ProxyOutput`.
    """
    decoder = ProxyDecoder(base, expert, anti, cfg)
    tokens = decoder.start(prompts)
    if on_token is not None:
        on_token(tokens)
    for _ in range(cfg.max_new_tokens - 1):
        if decoder.finished:
            break
        tokens = decoder.step()
        if on_token is not None:
            on_token(tokens)
    return decoder.output()
