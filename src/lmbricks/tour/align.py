"""Tour section ``align``: a policy optimised against a reward model, by best-of-n and by a short RL run.

1. **Reward model**: a Bradley-Terry reward model on the default model (its last layer, final norm
   and head trained, the trunk frozen: ``reward/train.py``'s ``train_on_features``) on a few
   ``builtin:dialogue`` training pairs, its accuracy on held-out pairs.
2. **Best-of-n** (``lmbricks align best-of-n``'s ``run_best_of_n``): reward of the best of the first
   n samples against the analytic KL ``log n - (n - 1) / n``, on held-out dialogue prompts.
3. **RL** (``lmbricks align rl``'s ``run_rl``): one or two RLOO steps of a LoRA policy against the
   same reward model, per step the reward, the KL to the initial policy and the CPU seconds spent
   sampling, scoring and updating. At tour size this shows the loop and its cost, not a trained
   policy; docs/alignment.md holds the over-optimisation experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmbricks.tour.run import SummaryRow, TourContext


@dataclass(frozen=True)
class AlignBudget:
    """How much the section measures (quick mode trims it)."""

    train_pairs: int
    test_pairs: int
    prompts: int  # held-out prompts for best-of-n
    ns: tuple[int, ...]
    new_tokens: int
    rl_steps: int
    rl_prompts: int  # prompts per RL step
    rl_samples: int  # samples per prompt (the RLOO group)


QUICK = AlignBudget(train_pairs=24, test_pairs=16, prompts=4, ns=(1, 2, 4), new_tokens=12, rl_steps=1,
                    rl_prompts=2, rl_samples=2)  # fmt: skip
FULL = AlignBudget(train_pairs=96, test_pairs=32, prompts=8, ns=(1, 2, 4, 8), new_tokens=24, rl_steps=2,
                   rl_prompts=4, rl_samples=4)  # fmt: skip


def _reward_model(ctx: TourContext, b: AlignBudget) -> tuple[Any, dict[str, Any]]:
    """A reward model trained on ``b.train_pairs`` dialogue pairs (last layer); its scorer and accuracy."""
    from lmbricks.align.scorer import SharedTrunkScorer
    from lmbricks.reward import RewardTrainConfig, load_pairs
    from lmbricks.reward.train import train_on_features
    from lmbricks.reward.warm import base_reward_model, pair_features, scores_of, trained_keys

    rm, tok = base_reward_model(str(ctx.model_path))
    rm.eval()
    cfg = RewardTrainConfig.model_validate(
        {"trainable_layers": 1, "max_len": 128, "epochs": 2, "precision": ctx.precision}
    )
    sets = {"train": load_pairs("builtin:dialogue", "train")[: b.train_pairs],
            "test": load_pairs("builtin:dialogue", "test")[: b.test_pairs]}  # fmt: skip
    feats, _ = pair_features(rm, tok, sets, cfg)
    feats = {k: ([t.float() for t in c], [t.float() for t in r]) for k, (c, r) in feats.items()}
    losses = train_on_features(rm, *feats["train"], cfg)
    start = rm.num_layers - 1
    rc, rr = scores_of(rm, feats["test"], start)
    top = {k: v.detach().clone() for k, v in rm.state_dict().items() if k in trained_keys(rm, start)}
    info = {"train_pairs": len(feats["train"][0]), "test_pairs": len(rc),
            "test_accuracy": float((rc > rr).float().mean()),
            "train_loss_first_last": [losses[0]["loss"], losses[-1]["loss"]] if losses else []}  # fmt: skip
    return SharedTrunkScorer(rm, tok, start, {"rm": top}, ["rm"], precision=ctx.precision), info


def align_section(ctx: TourContext) -> list[SummaryRow]:
    """A reward model, best-of-n against it, and a short RL run against it."""
    from lmbricks.align.config import BestOfNJob, RLJob
    from lmbricks.align.pipeline import run_best_of_n, run_rl

    b = QUICK if ctx.quick else FULL
    scorer, rm_info = _reward_model(ctx, b)
    bon = run_best_of_n(BestOfNJob.model_validate({
        "policy": str(ctx.model_path), "prompts": "builtin:dialogue@test", "ns": list(b.ns), "limit": b.prompts,
        "sampling": {"max_new_tokens": b.new_tokens}, "precision": ctx.precision}), scorer=scorer)  # fmt: skip
    job = RLJob.model_validate({
        "policy": str(ctx.model_path), "prompts": "builtin:dialogue", "limit": b.rl_prompts * b.rl_steps,
        "lora": {"rank": 8, "alpha": 16}, "steps": b.rl_steps, "prompts_per_step": b.rl_prompts,
        "samples_per_prompt": b.rl_samples, "sampling": {"max_new_tokens": b.new_tokens}, "optim": {"lr": 1e-3},
        "precision": ctx.precision})  # fmt: skip
    rl = run_rl(job, ctx.out_dir / "align-rl", force=True, scorer=scorer)
    per_n = [p.to_dict() for p in bon.per_n]
    ctx.results["align"] = {"reward_model": rm_info, "best_of_n": per_n, "rl": rl.records,
                            "rl_job": job.model_dump(mode="json"), "sampled_tokens": bon.samples.tokens}  # fmt: skip
    _report(ctx, b, rm_info, per_n, rl.records)
    step = rl.records[-1]
    cpu = step["sample_cpu_s"] + step["score_cpu_s"] + step["update_cpu_s"]
    gain = per_n[-1]["mean_reward"] - per_n[0]["mean_reward"]
    return [
        ("align", "reward model held-out accuracy", f"{rm_info['test_accuracy']:.2f}"),
        ("align", f"best-of-{per_n[-1]['n']} reward gain", f"{gain:+.2f}"),
        ("align", "RL step CPU s (sample / score / update)", f"{cpu:.1f} ({step['sample_cpu_s']:.1f} / "
         f"{step['score_cpu_s']:.1f} / {step['update_cpu_s']:.1f})"),
    ]  # fmt: skip


def _report(ctx: TourContext, b: AlignBudget, rm: dict[str, Any], per_n: list[dict[str, Any]],
            records: list[dict[str, float]]) -> None:  # fmt: skip
    """The section's tables, figure and sentences, all computed from its numbers."""
    from lmbricks.report import line_chart

    ctx.report.section(
        "Alignment: best-of-n and RL against a reward model",
        f"A reward model (last layer trained on {rm['train_pairs']} dialogue preference pairs) scores samples "
        f"of the model on {b.prompts} held-out prompts (up to {b.new_tokens} new tokens, temperature 1).",
    )
    ctx.report.table([[p["n"], f"{p['kl']:.2f}", f"{p['mean_reward']:.3f}", f"{p['stderr']:.3f}"] for p in per_n],
                     ["n", "KL (nats)", "mean reward of the pick", "standard error"])  # fmt: skip
    png = line_chart(ctx.out_dir / "align_best_of_n.png",
                     {"best-of-n": ([p["kl"] for p in per_n], [p["mean_reward"] for p in per_n])},
                     "best-of-n: reward against KL", "KL (nats)", "mean reward")  # fmt: skip
    ctx.report.figure(png, "KL = log n - (n - 1)/n; one set of samples serves every n.")
    ctx.report.table(
        [[int(r["step"]), f"{r['reward']:.3f}", f"{r['kl']:.4f}", f"{r['sample_cpu_s']:.1f}", f"{r['score_cpu_s']:.1f}",
          f"{r['update_cpu_s']:.1f}", int(r["sampled_tokens"])] for r in records],
        ["RL step", "mean reward", "KL per token", "sample CPU s", "score CPU s", "update CPU s", "tokens"],
    )  # fmt: skip
    gain = per_n[-1]["mean_reward"] - per_n[0]["mean_reward"]
    se = max(per_n[-1]["stderr"], per_n[0]["stderr"])
    shown = "more than" if gain > 2 * se else "within"
    step = records[-1]
    cpu = step["sample_cpu_s"] + step["score_cpu_s"] + step["update_cpu_s"]
    big = max(("sampling", "sample_cpu_s"), ("scoring", "score_cpu_s"), ("updating", "update_cpu_s"),
              key=lambda kv: step[kv[1]])  # fmt: skip
    ctx.report.text(
        f"The reward model ranks {rm['test_accuracy']:.0%} of {rm['test_pairs']} held-out pairs correctly. "
        f"Best-of-{per_n[-1]['n']} raises the mean reward by {gain:+.3f} over a plain sample ({shown} two "
        f"standard errors, {se:.3f}) at {per_n[-1]['kl']:.2f} nats. An RL step of {b.rl_prompts} prompts x "
        f"{b.rl_samples} samples took {cpu:.1f} CPU seconds, {step[big[1]] / cpu:.0%} of it {big[0]}; "
        f"{len(records)} step(s) are a check of the loop, not an optimised policy."
    )
