"""``lmbricks align``: optimise a policy against reward models (:mod:`lmbricks.align.pipeline`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from lmbricks.cli.common import console, print_json, reads_checkpoints, stage_progress, user_errors
from lmbricks.cli.options import json_option, precision_option

app = typer.Typer(help="Alignment: best-of-n sampling, DPO and online RL against reward models.", no_args_is_help=True)

_PROMPTS_HELP = "Prompts: a pairs spec (builtin:dialogue@test, pairs JSONL), a JSONL with 'prompt', or one per line."


@app.command(name="best-of-n")
@user_errors
@reads_checkpoints
def best_of_n(
    policy: str = typer.Argument(..., help="The policy: registry name or model directory."),
    reward_models: list[str] = typer.Argument(
        ..., help="Reward-model directories (lmbricks reward train / warm); several: the mean of their predictions."
    ),
    prompts: str = typer.Option(..., "--prompts", help=_PROMPTS_HELP),
    n: str = typer.Option("1,2,4,8,16,32,64", "--n", help="Comma-separated n values; max(n) samples per prompt."),
    limit: int | None = typer.Option(None, "--limit", help="Use the first N prompts."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    temperature: float = typer.Option(1.0, "--temperature"),
    batch_size: int = typer.Option(64, "--batch-size", help="Sequences decoded together."),
    seed: int = typer.Option(0, "--seed"),
    precision: str = precision_option(),
    as_json: bool = json_option("Print JSON (per n: KL, mean reward; the best responses)."),
) -> None:
    """Sample n responses per prompt, keep the one the reward model ranks highest; mean reward and KL per n.

    KL(best-of-n || policy) = log n - (n-1)/n nats. One set of max(n) samples serves every n (its first n).

    Example: lmbricks align best-of-n smollm2-135m-instruct runs/rm --prompts builtin:dialogue@test --n 1,4,16
    """
    from lmbricks.align.bon import parse_ns
    from lmbricks.align.config import BestOfNJob
    from lmbricks.align.pipeline import run_best_of_n
    from lmbricks.config import validate

    job = validate(
        BestOfNJob,
        {"policy": policy, "reward_models": reward_models, "prompts": prompts, "ns": parse_ns(n), "limit": limit,
         "sampling": {"max_new_tokens": max_new_tokens, "temperature": temperature, "batch_size": batch_size},
         "seed": seed, "precision": precision},
        "align best-of-n options",
    )  # fmt: skip
    with stage_progress("loading") as progress:
        res = run_best_of_n(job, progress=progress)
    if as_json:
        print_json(res.to_dict())
        return
    table = Table("n", "KL (nats)", "mean reward", "± s.e.", title=f"best-of-n on {len(res.prompts)} prompts")
    for b in res.per_n:
        table.add_row(str(b.n), f"{b.kl:.3f}", f"{b.mean_reward:.4f}", f"{b.stderr:.4f}")
    console.print(table)
    console.print(
        f"{res.samples.tokens} tokens sampled in {res.sample_cpu_s:.1f} s CPU, scored in {res.score_cpu_s:.1f} s CPU",
        highlight=False,
    )


@app.command()
@user_errors
@reads_checkpoints
def dpo(
    config: Path = typer.Argument(..., help="DPO YAML (policy, data, steps, batch_size, beta, lora, optim)."),
    out: Path = typer.Argument(..., help="Run directory: checkpoints/, log.jsonl, policy/ (and adapter/ for LoRA)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in OUT."),
    force: bool = typer.Option(False, "--force", help="Start afresh over an earlier run in OUT."),
) -> None:
    """DPO on preference pairs; the reference is the initial policy (its log-probabilities computed once).

    Example: lmbricks align dpo dpo.yaml runs/dpo   (dpo.yaml: policy: smollm2-135m-instruct, data: builtin:dialogue,
    steps: 8, batch_size: 8, lora: {rank: 8})
    """
    from lmbricks.align.config import DPOJob
    from lmbricks.align.pipeline import run_dpo

    _train("dpo", DPOJob, run_dpo, config, out, resume, force, "loss {loss:.4f}, pair accuracy {accuracy:.2f}")


@app.command()
@user_errors
@reads_checkpoints
def rl(
    config: Path = typer.Argument(
        ..., help="RL YAML (policy, reward_models, prompts, algorithm, steps, kl_coef, ...)."
    ),
    out: Path = typer.Argument(..., help="Run directory: checkpoints/, log.jsonl, policy/ (and adapter/ for LoRA)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in OUT."),
    force: bool = typer.Option(False, "--force", help="Start afresh over an earlier run in OUT."),
) -> None:
    """Online RL (RLOO or GRPO) against reward models with a KL penalty to the initial policy.

    Example: lmbricks align rl rl.yaml runs/rl   (rl.yaml: policy: smollm2-135m-instruct, reward_models: [runs/rm],
    prompts: builtin:dialogue, steps: 4, lora: {rank: 8})
    """
    from lmbricks.align.config import RLJob
    from lmbricks.align.pipeline import run_rl

    _train("rl", RLJob, run_rl, config, out, resume, force, "reward {reward:.4f}, KL {kl:.4f}")


def _train(label: str, schema: Any, run: Any, config: Path, out: Path, resume: bool, force: bool, last: str) -> None:
    """Load a job, run it under a progress bar, print where the policy went and the last step's figures."""
    from lmbricks.cli.common import training_progress
    from lmbricks.config import load

    job = load(schema, config, what=f"{label.upper()} config")
    with training_progress(label, job.steps) as (on_step, _):
        res = run(job, out, resume, force, lambda r: on_step(int(r["step"]), r["loss"]), inputs=[config])
    tail = "; last step " + last.format(**res.records[-1]) if res.records else ""
    console.print(f"policy saved to {res.policy}{tail}", highlight=False)
