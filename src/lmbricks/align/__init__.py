"""Alignment: optimise a policy against reward models (best-of-n, DPO, online RL).

- :mod:`.sample`: batched, KV-cached sampling of n responses per prompt from an ``lmbricks.nn.LM``.
- :mod:`.scorer`: rewards of responses: reward-model directories (one, an ensemble, WARM / Baklava)
  or any function of the text.
- :mod:`.bon`: best-of-n from a table of rewards, and its analytic KL.
- :mod:`.overopt`: over-optimisation measures: best-of-n's expected gold reward over all n-subsets,
  bootstrap intervals, head-to-head win rates with a Wilson interval.
- :mod:`.config`: the typed jobs; prompt specs.
- :mod:`.logprob`, :mod:`.dpo`: response log-probabilities; the DPO loss, encoded pairs, the reference.
- :mod:`.rl`: RLOO / GRPO advantages and the KL-penalised policy-gradient loss.
- :mod:`.trainee`: the trained policy: run directory, checkpoints, exact resume, the saved policy.
- :mod:`.pipeline`: ``run_best_of_n``, ``run_dpo`` and ``run_rl``, called by ``lmbricks align``.
"""

from __future__ import annotations

from lmbricks.align.bon import BestOfN, best_of_n, bon_kl
from lmbricks.align.config import BestOfNJob, load_prompts
from lmbricks.align.sample import Samples, SamplingConfig, sample_responses
from lmbricks.align.scorer import RewardEnsemble, Scorer, load_reward_ensemble, text_scorer

__all__ = [
    "BestOfN",
    "BestOfNJob",
    "RewardEnsemble",
    "Samples",
    "SamplingConfig",
    "Scorer",
    "best_of_n",
    "bon_kl",
    "load_prompts",
    "load_reward_ensemble",
    "sample_responses",
    "text_scorer",
]
