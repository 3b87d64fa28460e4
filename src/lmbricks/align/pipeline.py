"""Alignment pipelines: a typed job in, a typed result out, for ``lmbricks align best-of-n | dpo | rl``.

Every input is checked before any model is sampled or trained: the prompts or pairs are read, the
reward-model directories are checked (a reward head, one text format), their tokenizers are compared
with the policy's (the first differing token is named), and the output directory is kept apart from
every input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmbricks.align.bon import BestOfN, best_of_n, score_table
from lmbricks.align.config import BestOfNJob, DPOJob, RLJob, load_prompts
from lmbricks.align.dpo import check_pairs
from lmbricks.align.sample import Samples, encode_policy_prompts, load_policy, sample_responses
from lmbricks.align.scorer import Scorer, check_reward_dirs, load_reward_ensemble
from lmbricks.align.trainee import step_indices
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


@dataclass
class AlignRunResult:
    """What a DPO or RL run left: the run directory, the saved policy, one record per step."""

    run_dir: Path
    policy: Path  # run_dir / "policy": a Hugging Face directory
    adapter: Path | None  # run_dir / "adapter" for a LoRA run
    records: list[dict[str, float]] = field(default_factory=list)


def run_steps(t: Any, job: DPOJob | RLJob, one_step: Callable[[int], dict[str, float]],
              on_step: Callable[[dict[str, float]], None] | None, command: str) -> list[dict[str, float]]:  # fmt: skip
    """Steps ``t.start .. job.steps - 1`` of a run: each step's record logged, checkpoints as the job says."""
    from lmbricks.align.trainee import log_line, save_step

    records = []
    for step in range(t.start, job.steps):
        rec = one_step(step)
        records.append(rec)
        log_line(t.run_dir, rec)
        if on_step is not None:
            on_step(rec)
        if (step + 1) % job.checkpoint_every == 0 or step + 1 == job.steps:
            save_step(t, step + 1, job.keep_checkpoints, command)
    return records


def run_dpo(
    job: DPOJob, run_dir: str | Path, resume: bool = False, force: bool = False,
    on_step: Callable[[dict[str, float]], None] | None = None, inputs: Sequence[str | Path] = (),
) -> AlignRunResult:  # fmt: skip
    """DPO of ``job.policy`` on ``job.data`` (reference: the initial policy), checkpointed and resumable.

    Args:
        job: the validated job.
        run_dir: the run directory (checkpoints/, log.jsonl, policy/, adapter/ for LoRA).
        resume: continue from the newest checkpoint (bit-identical steps on CPU).
        force: start afresh over an earlier run.
        on_step: called with each step's record (``step``, ``loss``, ``accuracy``, ``margin``).
        inputs: more paths the run directory must keep apart from (the config file).

    Raises:
        ConfigError: no pairs, identical chosen and rejected, a run directory among the inputs, an
            earlier run without ``resume``/``force`` (all before any training).
    """
    from lmbricks.align.dpo import dpo_loss, encode_preferences, pair_logprobs, reference_logprobs
    from lmbricks.align.trainee import clip_and_step, make_trainee, prepare_run_dir, save_policy
    from lmbricks.hub import reference_paths
    from lmbricks.reward.pipeline import load_pair_spec, pair_spec_files
    from lmbricks.runtime import autocast, resolve_precision

    run_dir = Path(run_dir)
    pairs = load_pair_spec(job.data, "train", job.limit, job.seed)
    check_pairs(pairs)
    files = [*reference_paths(job.policy), *pair_spec_files(job.data), *inputs]
    resume_from = prepare_run_dir(run_dir, files, resume, force, job.model_dump(mode="json"))
    precision = resolve_precision(job.precision, "cpu")
    model, tok = load_policy(job.policy, torch.float32)
    enc = encode_preferences(tok, pairs, job.chat, job.max_len)
    with autocast(precision, "cpu"):
        ref_c, ref_r = reference_logprobs(model, enc)  # the initial policy, before any change
    t = make_trainee(model, tok, job.policy, job.lora, job.optim.lr, job.optim.weight_decay, job.seed, run_dir,
                     resume_from)  # fmt: skip

    def dpo_step(step: int) -> dict[str, float]:
        idx = step_indices(len(enc.prompts), job.batch_size, step, job.seed)
        with autocast(precision, "cpu"):
            pc, pr = pair_logprobs(t.model, enc, idx, job.recompute)
        loss, margin = dpo_loss(pc, pr, ref_c[idx], ref_r[idx], job.beta)
        loss.backward()
        norm = clip_and_step(t, job.optim.grad_clip)
        return {"step": step + 1, "loss": float(loss.detach()), "accuracy": float((margin > 0).float().mean()),
                "margin": float(margin.mean()), "grad_norm": float("nan") if norm is None else float(norm)}  # fmt: skip

    records = run_steps(t, job, dpo_step, on_step, "lmbricks align dpo")
    policy = save_policy(t, "lmbricks align dpo", job.model_dump(mode="json"), {"policy": job.policy})
    return AlignRunResult(run_dir, policy, run_dir / "adapter" if job.lora else None, records)


def sampling_copy(t: Any, precision: str) -> Any:
    """The policy as it samples: a plain LM (LoRA merged) in the inference dtype
    (:func:`lmbricks.align.trainee.sampling_model`: built once, refreshed in place every step).

    bf16 weights rather than autocast: autocast re-casts frozen weights (a LoRA run's base) at every
    decoding step, which made sampling 1.7x slower than plain ``generate``.
    """
    from lmbricks.align.trainee import sampling_model

    return sampling_model(t, precision)


def reference_copy(model: Any, precision: str) -> Any:
    """The frozen KL reference: a copy of the initial policy in the inference dtype, without gradients.

    bf16 weights under bf16 precision: its log-probabilities are computed under autocast anyway, which
    re-cast fp32 weights at every micro-batch, and half the memory; the loss moves by bf16 rounding only
    (tested against an fp32 reference).
    """
    import copy

    from lmbricks.runtime import inference_dtype

    ref = copy.deepcopy(model).eval().requires_grad_(False)
    return ref.to(inference_dtype(precision))  # type: ignore[arg-type]


def rl_step(t: Any, reference: Any, scorer: Scorer, prompts: list[str], ids: list[list[int]], job: RLJob,
            step: int, precision: str) -> dict[str, float]:  # fmt: skip
    """One RL step: sample k responses for each of the step's prompts, score them, one policy-gradient update.

    Returns:
        The step's record: reward, KL, loss, CPU seconds of sampling / scoring / updating, tokens sampled.
    """
    from lmbricks.align.logprob import token_logprobs
    from lmbricks.align.rl import advantages, policy_gradient_loss
    from lmbricks.align.trainee import clip_and_step
    from lmbricks.runtime import autocast

    idx = step_indices(len(prompts), job.prompts_per_step, step, job.seed)
    k, c0 = job.samples_per_prompt, time.process_time()
    samples = sample_responses(sampling_copy(t, precision), t.tokenizer, [ids[i] for i in idx], k, job.sampling,
                               seed=job.seed * 1_000_003 + step)  # fmt: skip
    c1 = time.process_time()
    rewards = score_table(scorer(*flat_pairs([prompts[i] for i in idx], samples)), len(idx), k)  # (P, k)
    adv = advantages(rewards, job.algorithm).flatten()  # (P * k,)
    c2 = time.process_time()
    rows = [p for p in samples.prompt_ids for _ in range(k)]
    resp = [r for rs in samples.responses for r in rs]
    n_tokens, kl_sum, loss_sum, mb = sum(len(r) for r in resp), 0.0, 0.0, 16
    t.model.train()
    for b in range(0, len(rows), mb):  # micro-batches: the (B, R, V) logits of 64 samples would not fit
        with autocast(precision, "cpu"):  # type: ignore[arg-type]
            with torch.no_grad():
                ref, _ = token_logprobs(reference, rows[b : b + mb], resp[b : b + mb])
            logp, mask = token_logprobs(t.model, rows[b : b + mb], resp[b : b + mb], job.recompute)
        loss, kl = policy_gradient_loss(logp, ref, mask, adv[b : b + mb], job.kl_coef, len(rows), n_tokens)
        loss.backward()
        kl_sum, loss_sum = kl_sum + float(kl), loss_sum + float(loss.detach())
    clip_and_step(t, job.optim.grad_clip)
    c3 = time.process_time()
    return {"step": step + 1, "reward": float(rewards.mean()), "kl": kl_sum, "loss": loss_sum,
            "sample_cpu_s": c1 - c0, "score_cpu_s": c2 - c1, "update_cpu_s": c3 - c2,
            "sampled_tokens": n_tokens}  # fmt: skip


def run_rl(
    job: RLJob, run_dir: str | Path, resume: bool = False, force: bool = False,
    on_step: Callable[[dict[str, float]], None] | None = None, inputs: Sequence[str | Path] = (),
    scorer: Scorer | None = None,
) -> AlignRunResult:  # fmt: skip
    """GRPO or RLOO of ``job.policy`` against ``job.reward_models``, KL-penalised to the initial policy.

    Args:
        job: the validated job.
        run_dir: the run directory (checkpoints/, log.jsonl, policy/, adapter/ for LoRA).
        resume: continue from the newest checkpoint (the sampling seed of a step is a function of it).
        force: start afresh over an earlier run.
        on_step: called with each step's record.
        inputs: more paths the run directory must keep apart from (the config file).
        scorer: rewards from Python (``(prompts, responses) -> (N,)``) in place of ``job.reward_models``
            (how ``scripts/overoptimisation.py`` trains against its proxies); recorded as ``python``.

    Raises:
        ConfigError: no prompts, no or unknown reward models, a vocabulary mismatch, a bad run directory
            (all before any sampling).
    """

    from lmbricks.align.trainee import make_trainee, prepare_run_dir, save_policy
    from lmbricks.hub import reference_paths
    from lmbricks.runtime import resolve_precision

    run_dir = Path(run_dir)
    prompts = load_prompts(job.prompts, job.limit, split="train")
    paths = check_reward_dirs(job.reward_models) if scorer is None else []
    files = [*reference_paths(job.policy), *paths, *inputs]
    resume_from = prepare_run_dir(run_dir, files, resume, force, job.model_dump(mode="json"))
    precision = resolve_precision(job.precision, "cpu")
    model, tok = load_policy(job.policy, torch.float32)
    if scorer is None:
        scorer = load_reward_ensemble(paths, tok, torch.bfloat16 if precision == "bf16" else torch.float32)
    ids = encode_policy_prompts(tok, prompts, job.sampling.chat)
    reference = reference_copy(model, precision)
    t = make_trainee(model, tok, job.policy, job.lora, job.optim.lr, job.optim.weight_decay, job.seed, run_dir,
                     resume_from)  # fmt: skip
    score = scorer
    records = run_steps(t, job, lambda step: rl_step(t, reference, score, prompts, ids, job, step, precision),
                        on_step, "lmbricks align rl")  # fmt: skip
    inputs_rec: dict[str, str | Path] = {"policy": job.policy, **{f"reward_model_{i}": p for i, p in enumerate(paths)}}
    recipe = {**job.model_dump(mode="json"), **({} if paths else {"reward": "python"})}
    policy = save_policy(t, "lmbricks align rl", recipe, inputs_rec)
    return AlignRunResult(run_dir, policy, run_dir / "adapter" if job.lora else None, records)
