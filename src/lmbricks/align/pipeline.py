"""Alignment pipelines: a typed job in, a typed result out, for ``lmbricks align best-of-n | dpo | rl``.

Every input is checked before any model is sampled or trained: the prompts or pairs are read, the
reward-model directories are checked (a reward head, one text format), their tokenizers are compared
with the policy's (the first differing token is named), and the output directory is kept apart from
every input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lmbricks.align.bon import BestOfN, best_of_n, score_table
from lmbricks.align.config import BestOfNJob, load_prompts
from lmbricks.align.sample import Samples, encode_policy_prompts, load_policy, sample_responses
from lmbricks.align.scorer import Scorer, check_reward_dirs, load_reward_ensemble
from lmbricks.reward.warm import Progress, no_progress


def flat_pairs(prompts: list[str], samples: Samples) -> tuple[list[str], list[str]]:
    """(prompt, response) texts of every sample, prompt-major."""
    ps = [p for p, rs in zip(prompts, samples.texts, strict=True) for _ in rs]
    return ps, [t for rs in samples.texts for t in rs]


@dataclass
class BestOfNResult:
    """What :func:`run_best_of_n` found: one :class:`BestOfN` per n and the best-of-max-n responses."""

    prompts: list[str]
    per_n: list[BestOfN]
    best: list[str]  # (P,) the best-of-max(n) response of each prompt
    samples: Samples = field(repr=False)
    sample_cpu_s: float  # process CPU time spent sampling
    score_cpu_s: float  # and scoring
    scorer: list[str] = field(default_factory=list)  # reward-model directories (empty: a scorer given in Python)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``lmbricks align best-of-n --json``."""
        return {
            "prompts": len(self.prompts), "samples_per_prompt": len(self.samples.responses[0]),
            "sampled_tokens": self.samples.tokens, "sample_cpu_s": self.sample_cpu_s,
            "score_cpu_s": self.score_cpu_s, "reward_models": self.scorer,
            "per_n": [b.to_dict() for b in self.per_n],
            "best": [{"prompt": p, "response": r} for p, r in zip(self.prompts, self.best, strict=True)],
        }  # fmt: skip


def run_best_of_n(job: BestOfNJob, scorer: Scorer | None = None, progress: Progress = no_progress) -> BestOfNResult:
    """Best-of-n for every n of ``job.ns`` from one set of max(ns) samples per prompt.

    Args:
        job: the validated job.
        scorer: rewards from Python (``(prompts, responses) -> (N,)``); default: ``job.reward_models``.
        progress: ``progress(stage, total)`` starts a stage, ``progress("", k)`` advances it.

    Returns:
        The :class:`BestOfNResult`.

    Raises:
        ConfigError: no prompts, no or unknown reward models, a vocabulary mismatch (before sampling).
    """
    from lmbricks.runtime import inference_dtype, resolve_precision

    prompts = load_prompts(job.prompts, job.limit)
    paths = check_reward_dirs(job.reward_models) if scorer is None else []
    dtype = inference_dtype(resolve_precision(job.precision, "cpu"))
    model, tok = load_policy(job.policy, dtype)
    if scorer is None:
        scorer = load_reward_ensemble(paths, tok, dtype)
    ids = encode_policy_prompts(tok, prompts, job.sampling.chat)
    n = max(job.ns)
    progress("sampling", len(prompts) * n)
    t0 = time.process_time()
    samples = sample_responses(model, tok, ids, n, job.sampling, job.seed, on_batch=lambda k: progress("", k))
    t1 = time.process_time()
    progress("scoring", None)
    table = score_table(scorer(*flat_pairs(prompts, samples)), len(prompts), n)  # (P, n)
    t2 = time.process_time()
    per_n = best_of_n(table, job.ns)
    best = [samples.texts[i][j] for i, j in enumerate(per_n[-1].picks)]
    return BestOfNResult(prompts, per_n, best, samples, t1 - t0, t2 - t1, [str(p) for p in paths])
