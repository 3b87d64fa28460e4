"""Rewards for responses: saved reward models (one, an ensemble, or a WARM / Baklava average), or any
function of the text.

A *scorer* is any callable ``(prompts, responses) -> (N,) fp32 tensor``; the pipelines take one, so a
known function of the text can stand in for a reward model in tests and experiments
(:func:`text_scorer`). :class:`RewardEnsemble` is the one built from reward-model directories
(:mod:`lmbricks.reward.io`): the mean of its members' predictions. A WARM or Baklava average is one
directory (what ``lmbricks reward warm`` writes under ``warm/``), so it is a one-member ensemble.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.reward.model import RewardModel

Scorer = Callable[[Sequence[str], Sequence[str]], Tensor]


def text_scorer(fn: Callable[[str, str], float]) -> Scorer:
    """A scorer from a function of (prompt, response) text."""

    def score(prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        return torch.tensor([float(fn(p, r)) for p, r in zip(prompts, responses, strict=True)])

    return score


def check_same_vocab(policy: Any, other: Any, what: str) -> None:
    """Refuse a tokenizer whose vocabulary differs from the policy's, naming the first differing id.

    Raises:
        ConfigError: sizes or a token string differ.
    """
    from lmbricks.proxy.vocab import token_list

    a, b = token_list(policy), token_list(other)
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            raise ConfigError(f"{what}: token id {i} is {y!r} there but {x!r} in the policy's vocabulary")
    if len(a) != len(b):
        raise ConfigError(f"{what}: its vocabulary has {len(b)} tokens, the policy's {len(a)}")


class RewardEnsemble:
    """The mean score of one or more reward models sharing a tokenizer.

    Args:
        members: reward models (eval mode).
        tokenizer: their tokenizer.
        fmt: how a (prompt, response) is rendered for scoring (``plain`` or ``chat``, as trained).
        batch_size: texts per forward.
        names: what each member is (for provenance).
    """

    def __init__(self, members: Sequence[RewardModel], tokenizer: Any, fmt: str = "plain", batch_size: int = 16,
                 names: Sequence[str] = ()) -> None:  # fmt: skip
        if not members:
            raise ConfigError("no reward model given")
        self.members, self.tokenizer, self.fmt, self.batch_size = list(members), tokenizer, fmt, batch_size
        self.names = list(names)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        """Scores (N,) fp32 of the pairs, the mean over members."""
        from lmbricks.reward.model import pad_right
        from lmbricks.reward.train import render_pair_text

        texts = [render_pair_text(self.tokenizer, p, r, self.fmt) for p, r in zip(prompts, responses, strict=True)]
        ids = [torch.tensor(self.tokenizer(t, add_special_tokens=False)["input_ids"] or [0]) for t in texts]
        total = torch.zeros(len(texts))
        for rm in self.members:
            out = []
            for b in range(0, len(ids), self.batch_size):
                x, lengths = pad_right(ids[b : b + self.batch_size])
                out.append(rm(x, lengths).float())
            total += torch.cat(out) if out else torch.zeros(0)
        return total / len(self.members)


def reward_format(path: Path) -> str:
    """The text format a reward model was trained with (reward.json's ``format``; default plain)."""
    f = path / "reward.json"
    info = json.loads(f.read_text()) if f.exists() else {}
    return str(info.get("format", "plain"))


def check_reward_dirs(refs: Sequence[str | Path]) -> list[Path]:
    """The reward-model directories, checked before any model is loaded.

    Raises:
        ConfigError: none given, a path that does not exist or holds no reward head, or members
            trained on different text formats.
    """
    if not refs:
        raise ConfigError("no reward model given")
    paths = []
    for ref in refs:
        p = Path(ref)
        if not p.is_dir():
            raise ConfigError(f"reward model {str(ref)!r}: no such directory")
        if not (p / "reward_head.safetensors").exists():
            raise ConfigError(f"reward model {p}: no reward_head.safetensors (not a reward model directory)")
        paths.append(p)
    if len({reward_format(p) for p in paths}) > 1:
        raise ConfigError("the reward models were trained on different text formats (reward.json 'format')")
    return paths


def load_reward_ensemble(
    refs: Sequence[str | Path], policy_tokenizer: Any, dtype: torch.dtype = torch.float32
) -> RewardEnsemble:
    """Load reward-model directories as one :class:`RewardEnsemble` whose vocabulary is the policy's.

    Args:
        refs: directories written by ``lmbricks reward train`` (or a WARM / Baklava average).
        policy_tokenizer: the policy's tokenizer (every member must share its vocabulary).
        dtype: weight dtype of the members (bf16 halves their memory for inference).

    Raises:
        ConfigError: see :func:`check_reward_dirs`; a member's vocabulary differs from the policy's.
    """
    from transformers import AutoTokenizer

    from lmbricks.reward.io import load_reward_model

    paths = check_reward_dirs(refs)
    for p in paths:  # tokenizers first: a mismatch is refused before any weights are read
        if not (p / "tokenizer.json").exists() and not (p / "tokenizer_config.json").exists():
            raise ConfigError(f"reward model {p}: no tokenizer files")
        check_same_vocab(policy_tokenizer, AutoTokenizer.from_pretrained(p), f"reward model {p}")
    members, tok = [], None
    for p in paths:
        rm, tok_p = load_reward_model(p)
        members.append(rm.to(dtype).eval())
        tok = tok or tok_p
    return RewardEnsemble(members, tok, reward_format(paths[0]), names=[str(p) for p in paths])


class SharedTrunkScorer:
    """Several reward models that differ only above a frozen trunk, scored with one trunk pass.

    The reward models of ``scripts/overoptimisation.py`` (gold, proxies, their WARM average) all train
    the layers from ``start`` of one base :class:`RewardModel`; their states are ``tops`` (state-dict
    entries of those layers, the final norm and the head). A call computes each text's trunk features
    once, scores them under every top, keeps every table in :attr:`last`, and returns the mean over
    the ``target`` names (one name: that model; several: their prediction ensemble).

    Args:
        rm: the base reward model (its trunk weights are shared; its top is overwritten per call).
        tokenizer: its tokenizer.
        start: the first layer the tops hold.
        tops: ``{name: state dict of the top}``.
        target: the names whose mean score is the reward.
        max_len: texts are cut to this many tokens.
        precision: the trunk's autocast (``bf16``, as the experiment's features; ``fp32``: none).
    """

    def __init__(self, rm: RewardModel, tokenizer: Any, start: int, tops: dict[str, dict[str, Tensor]],
                 target: Sequence[str], max_len: int = 160, precision: str = "bf16") -> None:  # fmt: skip
        unknown = [t for t in target if t not in tops]
        if not target or unknown:
            raise ConfigError(f"reward target {list(target)}: {unknown or 'none'} not among {sorted(tops)}")
        self.rm, self.tokenizer, self.start, self.tops = rm, tokenizer, start, tops
        self.target, self.max_len, self.precision = list(target), max_len, precision
        self.last: dict[str, Tensor] = {}

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        """The target's scores (N,) fp32; :attr:`last` holds ``{name: (N,)}`` for every top."""
        from lmbricks.reward.train import precompute, render_pair_text, score_features
        from lmbricks.runtime import autocast, resolve_precision

        texts = [render_pair_text(self.tokenizer, p, r, "plain") for p, r in zip(prompts, responses, strict=True)]
        seqs = [torch.tensor((self.tokenizer(t, add_special_tokens=False)["input_ids"] or [0])[: self.max_len])
                for t in texts]  # fmt: skip
        cpu = torch.device("cpu")
        with autocast(resolve_precision(self.precision, cpu), cpu):  # the frozen trunk, once
            feats = [f.float() for f in precompute(self.rm, seqs, self.start, batch_size=16)]
        self.last = {}
        for name, state in self.tops.items():
            self.rm.load_state_dict(state, strict=False)
            self.last[name] = score_features(self.rm, feats, self.start).float()  # (N,)
        return torch.stack([self.last[t] for t in self.target]).mean(0)
