"""Greedy generation over long inputs: the plain model (one KV cache) or with InfLLM memory.

With memory the prompt is prefilled ``chunk_size`` tokens at a time (each chunk attends to the
memory), then one token per step; without memory the whole prompt is one forward pass with a KV
cache, as the base model would run it.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.nn.model import LM, KVCache
from lmbricks.plugins.memory.config import InfLLMConfig
from lmbricks.plugins.memory.plug import MemoryPlug

#: progress(tokens done, tokens in all) during prefill.
Progress = Callable[[int, int], None]


@dataclass
class Generation:
    """What :func:`generate` returns.

    Attributes:
        tokens: the generated token ids (prompt excluded).
        prompt_tokens: the prompt's length.
        prefill_s, decode_s: wall time of the prefill and of the decoding steps.
        per_token_s: wall time of each decoding step.
        prefill_cpu_s, per_token_cpu_s: the same in CPU time of this process (steadier on a shared machine).
        peak_rss_mb: the process's peak resident memory so far (MB).
        blocks: memory blocks per layer at the end (0 without memory).
        memory_mb: what the memory (or the plain KV cache) holds at the end, all layers (MB).
    """

    tokens: list[int]
    prompt_tokens: int
    prefill_s: float
    decode_s: float
    per_token_s: list[float] = field(default_factory=list)
    prefill_cpu_s: float = 0.0
    per_token_cpu_s: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    blocks: int = 0
    memory_mb: float = 0.0


def _last_logits(model: nn.Module, ids: Tensor, cache: KVCache | None = None) -> Tensor:
    """Logits of the last position only, (1, T) -> (V,)."""
    if isinstance(model, LM):
        x, _ = model.hidden_states(ids, cache)
        return model.lm_head(x[:, -1])[0]
    kwargs: dict[str, Any] = {"cache": cache} if cache is not None else {"use_cache": False}  # transformers 5: `cache`
    return model(input_ids=ids, logits_to_keep=1, **kwargs).logits[0, -1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: Tensor,
    memory: InfLLMConfig | None,
    max_new_tokens: int = 32,
    eos_token_id: int | None = None,
    progress: Progress | None = None,
    griffin: float | None = None,
) -> Generation:
    """Greedy continuation of one prompt, with InfLLM memory or plain.

    Args:
        model: lmbricks' LM or a transformers Llama/Qwen2 causal LM (eval mode).
        input_ids: (T,) or (1, T) prompt token ids.
        memory: InfLLM settings, or None for the plain model.
        max_new_tokens: tokens to generate (stops early at ``eos_token_id``).
        eos_token_id: the end-of-sequence id, or None.
        progress: called after each prefill chunk.
        griffin: with the plain model only, the fraction of each FFN's neurons kept while
            generating, chosen once from the prompt (GRIFFIN, arXiv 2404.01365; see
            ``lmbricks.sparsify.griffin``); None keeps the dense FFNs.

    Returns:
        A :class:`Generation` (tokens, timings, peak memory).

    Raises:
        ConfigError: an empty prompt, a batch of several prompts, a non-attention model, a window
            larger than the model's, ``griffin`` with a memory or outside (0, 1].
    """
    ids = input_ids.reshape(1, -1) if input_ids.dim() == 1 else input_ids
    if ids.shape[0] != 1 or ids.shape[1] == 0:
        raise ConfigError(f"input_ids: one non-empty prompt expected, got shape {tuple(input_ids.shape)}")
    if griffin is not None and memory is not None:
        raise ConfigError("griffin: GRIFFIN's neuron selection runs with the plain model only (memory none)")
    if memory is None:
        return _plain(model, ids, max_new_tokens, eos_token_id, progress, griffin)
    plug = MemoryPlug(model, memory)
    with plug:
        t0, c0, T = time.perf_counter(), time.process_time(), ids.shape[1]
        for start in range(0, T, memory.chunk_size):
            logits = _last_logits(model, ids[:, start : start + memory.chunk_size])
            if progress is not None:
                progress(min(T, start + memory.chunk_size), T)
        out = Generation([], T, time.perf_counter() - t0, 0.0, prefill_cpu_s=time.process_time() - c0)
        _decode(out, logits, lambda nxt: _last_logits(model, nxt), max_new_tokens, eos_token_id)
        out.blocks, out.memory_mb = plug.num_blocks, plug.nbytes / 2**20
    out.peak_rss_mb = _peak_mb()
    return out


def _plain(
    model: nn.Module, ids: Tensor, max_new: int, eos: int | None, progress: Progress | None, griffin: float | None
) -> Generation:
    """The plain model's greedy continuation; with ``griffin``, FFNs restricted after the prefill."""
    from lmbricks.sparsify.griffin import Griffin

    t0, c0 = time.perf_counter(), time.process_time()
    cache: Any = KVCache(model.cfg.num_layers) if isinstance(model, LM) else _hf_cache()
    with contextlib.ExitStack() as stack:
        selection = None if griffin is None else stack.enter_context(Griffin(model, griffin))  # validates keep
        logits = _last_logits(model, ids, cache)
        if selection is not None:
            selection.prune()  # the prompt's statistic picks each FFN's neurons, counted in the prefill
        if progress is not None:
            progress(ids.shape[1], ids.shape[1])
        out = Generation([], ids.shape[1], time.perf_counter() - t0, 0.0, prefill_cpu_s=time.process_time() - c0)
        _decode(out, logits, lambda nxt: _last_logits(model, nxt, cache), max_new, eos)
    out.peak_rss_mb = _peak_mb()
    if isinstance(cache, KVCache):
        out.memory_mb = sum(t.numel() * t.element_size() for t in [*cache.keys, *cache.values] if t is not None) / 2**20
    return out


def _hf_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


def _decode(out: Generation, logits: Tensor, step: Callable[[Tensor], Tensor], max_new: int, eos: int | None) -> None:
    """Greedy steps from the prefill's last logits, appending tokens and timings to ``out``."""
    for _ in range(max_new):
        nxt = int(logits.argmax())
        out.tokens.append(nxt)
        if eos is not None and nxt == eos or len(out.tokens) == max_new:
            break
        t, c = time.perf_counter(), time.process_time()
        logits = step(torch.tensor([[nxt]], device=logits.device))
        out.per_token_s.append(time.perf_counter() - t)
        out.per_token_cpu_s.append(time.process_time() - c)
    out.decode_s = sum(out.per_token_s)
