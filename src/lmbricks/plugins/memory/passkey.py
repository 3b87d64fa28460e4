"""Passkey retrieval: a number hidden at a depth of a long filler, asked for at the end.

Two fillers: ``synthetic`` (a few plain sentences repeated, the standard test) and ``real`` (a long
real document: the ``en_prose`` corpus's books joined, from ``lmbricks.data``), into which a fact
("the code of the blue door is N") is placed. A trial is correct when the first number the model
generates is the hidden one. Lengths are in tokens of the model's tokenizer, the whole prompt included.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from lmbricks.config import settings
from lmbricks.errors import ConfigError
from lmbricks.plugins.memory.config import InfLLMConfig, sliding_window
from lmbricks.plugins.memory.generate import generate

METHODS = ("plain", "sliding", "infllm")
_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
_TASKS = {
    "synthetic": (
        "There is a pass key hidden in the following text. Find it and remember it.\n",
        "The pass key is {key}. Remember it. {key} is the pass key. ",
        "\nWhat is the pass key? The pass key is",
    ),
    "real": (
        "A fact is hidden in the following book. Find it and remember it.\n",
        " The code of the blue door is {key}. Remember: the code of the blue door is {key}. ",
        "\nWhat is the code of the blue door? The code of the blue door is",
    ),
}


@settings
class PasskeyJob:
    """One passkey evaluation: every (method, length, depth) cell, ``samples`` keys each.

    Attributes:
        lengths: prompt lengths in tokens.
        depths: where the key sits, as a fraction of the filler (0 = start, 1 = end).
        methods: among "plain" (the model as is), "sliding" (sinks + the last ``window`` tokens)
            and "infllm".
        samples: keys per cell (each a random 5-digit number).
        filler: "synthetic" or "real" (a fact in a real book).
        seed: seeds the keys.
    """

    lengths: tuple[Annotated[int, Field(ge=64)], ...] = (4096, 16384, 32768)
    depths: tuple[Annotated[float, Field(ge=0, le=1)], ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    methods: tuple[Literal["plain", "sliding", "infllm"], ...] = ("plain", "sliding", "infllm")
    samples: Annotated[int, Field(ge=1)] = 1
    filler: Literal["synthetic", "real"] = "synthetic"
    seed: int = 0


@dataclass
class PasskeyTrial:
    """One trial's outcome and costs."""

    method: str
    length: int
    depth: float
    key: str
    answer: str
    correct: bool
    prefill_s: float
    per_token_s: float  # mean wall time of a decoding step
    prefill_cpu_s: float  # CPU time of the prefill
    per_token_cpu_s: float  # mean CPU time of a decoding step
    peak_rss_mb: float
    memory_mb: float  # what the memory / KV cache holds after the prompt and the answer


@dataclass
class PasskeyResult:
    """What :func:`run_passkey` returns: every trial, in order."""

    job: PasskeyJob
    trials: list[PasskeyTrial] = field(default_factory=list)

    def accuracy(self, method: str, length: int, depth: float | None = None) -> float:
        """Share of correct trials of a method at a length (and depth, if given); NaN when none ran."""
        hits = [
            t.correct
            for t in self.trials
            if t.method == method and t.length == length and (depth is None or t.depth == depth)
        ]
        return sum(hits) / len(hits) if hits else float("nan")


def filler_ids(tokenizer: Any, kind: str, n_tokens: int) -> list[int]:
    """At least ``n_tokens`` filler token ids: the synthetic sentences repeated, or the real books.

    Raises:
        ConfigError: the real corpus is shorter than ``n_tokens``.
    """
    if kind == "synthetic":
        unit = tokenizer.encode(_FILLER, add_special_tokens=False)
        return unit * (n_tokens // len(unit) + 1)
    from lmbricks.data.corpus import domain_text

    ids = tokenizer.encode(domain_text("en_prose", "test", max_bytes=8 * n_tokens + 4096), add_special_tokens=False)
    if len(ids) < n_tokens:
        raise ConfigError(f"filler: the en_prose corpus gives {len(ids)} tokens, fewer than the {n_tokens} asked")
    return list(ids)


def needle_prompt(tokenizer: Any, filler: Sequence[int], length: int, depth: float, key: str, kind: str) -> list[int]:
    """The prompt's ids: instruction, filler with the key at ``depth``, question; ``length`` tokens in all.

    Raises:
        ConfigError: ``length`` leaves no room for filler.
    """
    head, needle, question = (tokenizer.encode(s.format(key=key), add_special_tokens=False) for s in _TASKS[kind])
    room = length - len(head) - len(needle) - len(question)
    if room < 0:
        raise ConfigError(f"lengths: {length} tokens leave no room for the filler (the task takes {length - room})")
    at = round(depth * room)
    return [*head, *filler[:at], *needle, *filler[at:room], *question]


def first_number(text: str) -> str:
    """The first run of digits in ``text``, or "" (the model's answer to the passkey question)."""
    found = re.search(r"\d+", text)
    return found.group(0) if found else ""


def _config_of(method: str, infllm: InfLLMConfig) -> InfLLMConfig | None:
    if method == "plain":
        return None
    return infllm if method == "infllm" else sliding_window(infllm)


def run_passkey(
    model: nn.Module,
    tokenizer: Any,
    job: PasskeyJob,
    infllm: InfLLMConfig,
    progress: Callable[[PasskeyTrial], None] | None = None,
) -> PasskeyResult:
    """Every trial of ``job``: greedy answers of each method to the same prompts.

    Args:
        model: lmbricks' LM or a transformers Llama/Qwen2 (eval mode).
        tokenizer: its tokenizer.
        job: lengths, depths, methods, samples, filler.
        infllm: the InfLLM settings (the sliding window uses its ``window`` and ``chunk_size``).
        progress: called after each trial.

    Returns:
        A :class:`PasskeyResult`.
    """
    rng = random.Random(job.seed)
    filler = filler_ids(tokenizer, job.filler, max(job.lengths))
    result = PasskeyResult(job)
    for length in job.lengths:
        for depth in job.depths:
            for _ in range(job.samples):
                key = str(rng.randrange(10000, 100000))
                ids: Tensor = torch.tensor(needle_prompt(tokenizer, filler, length, depth, key, job.filler))
                for method in job.methods:
                    out = generate(model, ids, _config_of(method, infllm), max_new_tokens=8)
                    answer = tokenizer.decode(out.tokens, skip_special_tokens=True)
                    steps = max(1, len(out.per_token_s))
                    mean_step, mean_cpu = sum(out.per_token_s) / steps, sum(out.per_token_cpu_s) / steps
                    trial = PasskeyTrial(
                        method, length, depth, key, answer, first_number(answer) == key,
                        out.prefill_s, mean_step, out.prefill_cpu_s, mean_cpu, out.peak_rss_mb, out.memory_mb,
                    )  # fmt: skip
                    result.trials.append(trial)
                    if progress is not None:
                        progress(trial)
    return result


def accuracy_heatmap(result: PasskeyResult, method: str, path: Any) -> Any:
    """A PNG heat map of one method's accuracy, lengths (rows) x depths (columns); returns the path."""
    from lmbricks.report.plots import heatmap

    job = result.job
    matrix = [[result.accuracy(method, n, d) for d in job.depths] for n in job.lengths]
    rows = [f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in job.lengths]  # 768 stays 768, not "0k"
    cols = [f"{d:.0%}" for d in job.depths]
    return heatmap(path, matrix, rows, cols, f"{method}: passkey accuracy ({job.filler})", "{:.0%}")
