"""``lmbricks reward``: train and evaluate reward models, and the WARM experiment (:mod:`lmbricks.reward.pipeline`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Column, Table

from lmbricks.cli.common import FORCE_HELP, console, print_json, reads_checkpoints, stage_progress, user_errors
from lmbricks.cli.options import precision_option
from lmbricks.runtime.precision import RequestedPrecision

app = typer.Typer(help="Reward models: Bradley-Terry training on preference pairs, WARM.", no_args_is_help=True)

_DATA_HELP = "Preference pairs: a JSONL file (prompt, chosen, rejected) or builtin:dialogue|chitchat|champ."


@app.command()
@user_errors
@reads_checkpoints
def train(
    model: str = typer.Argument(..., help="Backbone: registry name or model directory."),
    data: str = typer.Argument(..., help=_DATA_HELP),
    out: Path = typer.Argument(..., help="Output directory (a *ForSequenceClassification checkpoint)."),
    limit: int | None = typer.Option(None, "--limit", help="Use the first N pairs."),
    trainable_layers: int = typer.Option(2, "--trainable-layers", help="Last layers trained (0: head only)."),
    lr: float = typer.Option(1e-4, "--lr"),
    epochs: int = typer.Option(2, "--epochs"),
    batch_size: int = typer.Option(8, "--batch-size"),
    seed: int = typer.Option(0, "--seed"),
    max_len: int = typer.Option(256, "--max-len", help="Skip pairs with a side longer than this."),
    precision: RequestedPrecision = precision_option(),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Train a scalar reward head (last-token score) with the Bradley-Terry loss.

    Example: lmbricks reward train smollm2-135m-instruct builtin:dialogue runs/rm --limit 200
    """
    from lmbricks.config import validate
    from lmbricks.reward import RewardTrainConfig
    from lmbricks.reward.pipeline import RewardJob, train_job

    cfg = validate(
        RewardTrainConfig,
        {"lr": lr, "epochs": epochs, "batch_size": batch_size, "seed": seed,
         "trainable_layers": trainable_layers, "max_len": max_len, "precision": precision},
        "reward train options",
    )  # fmt: skip
    job = validate(RewardJob, {"model": model, "data": data, "out": out, "limit": limit, "train": cfg, "force": force},
                   "reward train options")  # fmt: skip
    with stage_progress("features") as progress:
        res = train_job(job, progress)
    console.print(
        f"trained on {res.pairs - res.skipped} pairs ({res.skipped} skipped for length); "
        f"last-10-step loss {res.recent_loss:.4f}; saved {out}",
        highlight=False,
    )


@app.command(name="eval")
@user_errors
@reads_checkpoints
def evaluate(
    reward_model: Path = typer.Argument(..., help="A directory written by `lmbricks reward train`."),
    data: str = typer.Argument(..., help=_DATA_HELP),
    split: str = typer.Option("test", "--split", help="Split of built-in pairs."),
    limit: int | None = typer.Option(None, "--limit", help="Use the first N pairs."),
    max_len: int = typer.Option(512, "--max-len"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Pairwise accuracy (chosen scored above rejected) of a reward model, with a Wilson 95% interval.

    Example: lmbricks reward eval runs/rm builtin:chitchat --split test
    """
    from lmbricks.reward.pipeline import evaluate_reward_model

    res = evaluate_reward_model(reward_model, data, split, limit, max_len)
    if as_json:
        print_json(res.to_dict())
        return
    lo, hi = res.ci95
    console.print(f"{res.correct}/{res.pairs} pairs ranked right: accuracy {res.accuracy:.3f} [{lo:.3f}, {hi:.3f}]",
                  highlight=False)  # fmt: skip


@app.command()
@user_errors
@reads_checkpoints
def warm(
    model: str = typer.Argument(..., help="Backbone: registry name or model directory."),
    data: str = typer.Argument(..., help=_DATA_HELP + " (training pairs)"),
    out: Path = typer.Argument(..., help="Output directory: members/, warm/, results.json, report.html."),
    members: int = typer.Option(4, "--members", "-m", help="Reward models to average."),
    limit: int | None = typer.Option(200, "--limit", help="Training pairs."),
    held_out: str = typer.Option("", "--held-out", help="In-distribution test pairs [default: DATA@test]."),
    shift: list[str] = typer.Option(None, "--shift", help="Shifted test pairs (repeatable), e.g. builtin:champ."),
    eval_limit: int = typer.Option(100, "--eval-limit", help="Pairs per evaluation set."),
    trainable_layers: int = typer.Option(2, "--trainable-layers"),
    lr: list[float] = typer.Option(None, "--lr", help="Learning rates, cycled over members [default: 1e-4 2e-4]."),
    epochs: int = typer.Option(2, "--epochs"),
    init: list[str] = typer.Option(
        None, "--init", help="Baklava: member i starts from the i-th of these SFT checkpoints (repeatable, cycled)."
    ),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """WARM: weight-average M reward models trained from one initialisation; compare members and ensemble.

    Members differ in data order and learning rate; the average is made with `lmbricks merge` (linear).
    With --init (Baklava), members start from successive checkpoints of one SFT run of MODEL that
    trained only its last --trainable-layers layers.

    Example: lmbricks reward warm smollm2-135m-instruct builtin:dialogue runs/warm --shift builtin:chitchat@test
    """
    from lmbricks.config import validate
    from lmbricks.reward.pipeline import WarmJob, warm_job

    options = {"model": model, "data": data, "out": out, "members": members, "limit": limit, "held_out": held_out,
               "shift": shift or [], "eval_limit": eval_limit, "trainable_layers": trainable_layers,
               "epochs": epochs, "inits": init or [], "force": force, **({"lrs": lr} if lr else {})}  # fmt: skip
    job = validate(WarmJob, options, "reward warm options")
    with stage_progress("features") as progress:
        res = warm_job(job, progress).results
    sets = list(res["warm"])
    table = Table("model", *[Column(n, justify="right") for n in sets], title=f"WARM on {model}: pairwise accuracy")
    for i, m in enumerate(res["members"]):
        table.add_row(f"member {i}", *[f"{m[n]['accuracy']:.3f}" for n in sets])
    table.add_row("mean member", *[f"{res['mean_member'][n]:.3f}" for n in sets])
    table.add_row("ensemble", *[f"{res['ensemble'][n]['accuracy']:.3f}" for n in sets])
    table.add_row("WARM (merged)", *[f"{res['warm'][n]['accuracy']:.3f}" for n in sets])
    console.print(table)
    console.print(f"results: {out / 'results.json'}; report: {out / 'report.html'}", highlight=False)
