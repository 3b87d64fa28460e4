"""``tokenizer_source``: the output vocabulary, and each input's embedding rows mapped onto it.

The rule (mergekit's):

* ``base``: the output tokenizer is the base model's (the first model when there is no base);
  ``union``: the base tokenizer plus every token of the other inputs it lacks, appended in input
  order; ``<model>``: that model's tokenizer.
* The output vocabulary size is the number of tokens in the output tokenizer.
* For each input, the row of output token ``j`` is the input's row for the same token string. When
  an input lacks the token, the row is filled: from the only input that has it; else from the base
  model if it has it; else the mean of the inputs that have it; zeros if none has it.
* The filled tensors are then merged like any other tensor (``model.embed_tokens.weight``,
  ``lm_head.weight``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmbricks.errors import ConfigError

VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


@dataclass
class VocabPlan:
    """The output tokenizer and, per input key, the source row of each output token (-1: missing)."""

    tokenizer: Any
    size: int
    index: dict[str, torch.Tensor]  # key -> (size,) int64
    base_key: str | None


def _vocab(tok: Any, limit: int | None) -> dict[str, int]:
    return {t: i for t, i in tok.get_vocab().items() if limit is None or i < limit}


def build_vocab(
    source: str,
    base_key: str | None,
    paths: Mapping[str, Path],
    vocab_sizes: Mapping[str, int],
) -> VocabPlan:
    """Build the output tokenizer and the row maps.

    Args:
        source: ``base``, ``union`` or a model key (one of ``paths``).
        base_key: the base model's key, if any.
        paths: input key -> model directory (holding the tokenizer files).
        vocab_sizes: input key -> ``vocab_size`` of its config (rows beyond are padding).

    Returns:
        The :class:`VocabPlan`.

    Raises:
        ConfigError: a tokenizer that cannot be loaded, naming the model, or an unknown source.
    """
    from transformers import AutoTokenizer

    def load(key: str) -> Any:
        try:
            return AutoTokenizer.from_pretrained(str(paths[key]))
        except Exception as exc:  # transformers raises many types
            raise ConfigError(f"tokenizer_source: cannot load the tokenizer of {key}: {exc}") from None

    keys = list(paths)
    toks = {k: load(k) for k in keys}
    vocabs = {k: _vocab(toks[k], vocab_sizes.get(k)) for k in keys}
    out_tok = _output_tokenizer(source, base_key or keys[0], toks, vocabs)
    out_vocab = out_tok.get_vocab()
    size = len(out_vocab)
    index = {}
    for k in keys:
        idx = torch.full((size,), -1, dtype=torch.int64)
        v = vocabs[k]
        for t, j in out_vocab.items():
            if j < size and t in v:
                idx[j] = v[t]
        index[k] = idx
    return VocabPlan(out_tok, size, index, base_key)


def _output_tokenizer(source: str, ref: str, toks: dict[str, Any], vocabs: dict[str, dict[str, int]]) -> Any:
    """The output tokenizer for ``tokenizer_source`` ``source`` (``ref``: the base or first model)."""
    if source == "base":
        return toks[ref]
    if source == "union":
        out_tok = toks[ref]
        have = set(out_tok.get_vocab())
        extra: list[str] = []
        for k in toks:
            for t, _i in sorted(vocabs[k].items(), key=lambda kv: kv[1]):
                if t not in have:
                    have.add(t)
                    extra.append(t)
        if extra:
            out_tok.add_tokens(extra)
        return out_tok
    if source in toks:
        return toks[source]
    raise ConfigError(
        f"tokenizer_source: {source!r} is neither 'base', 'union' nor one of the recipe's models ({', '.join(toks)})"
    )


def align_rows(plan: VocabPlan, keys: Sequence[str], tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Map each input's vocabulary rows onto the output vocabulary, filling missing rows (module rule).

    Args:
        plan: from :func:`build_vocab`.
        keys: input key of each tensor.
        tensors: ``(V_k, H)`` each.

    Returns:
        fp32 ``(V_out, H)`` tensors, one per input.
    """
    hidden = tensors[0].shape[1:]
    idx = torch.stack([plan.index[k] for k in keys])  # (M, V_out)
    present = idx >= 0
    count = present.sum(0)  # (V_out,)
    rows = [t.float()[idx[m].clamp(min=0)] for m, t in enumerate(tensors)]  # (V_out, H) each
    need = (~present).any(0)
    if not bool(need.any()):
        return rows
    fill = torch.zeros((int(need.sum()), *hidden), dtype=torch.float32)
    sel = need.nonzero().squeeze(1)
    for m in range(len(keys)):
        fill += rows[m][sel] * present[m, sel].float().view(-1, *([1] * len(hidden)))
    fill /= count[sel].clamp(min=1).float().view(-1, *([1] * len(hidden)))
    if plan.base_key in keys:
        b = list(keys).index(plan.base_key)  # type: ignore[arg-type]
        use_base = present[b, sel] & (count[sel] > 1)
        fill[use_base] = rows[b][sel][use_base]
    out = []
    for m in range(len(keys)):
        r = rows[m]
        miss = ~present[m, sel]
        r[sel[miss]] = fill[miss]
        out.append(r)
    return out
