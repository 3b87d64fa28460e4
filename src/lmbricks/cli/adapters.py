"""``lmbricks adapters``: train, catalogue, compose, route, update and extract LoRA bricks.

The group's commands live one group a module: this one trains, updates and extracts bricks;
``adapters_catalogue`` (plug, unplug, list), ``adapters_compose`` and ``adapters_route``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lmbricks.adapters.config import DEFAULT_TARGETS
from lmbricks.cli.adapters_catalogue import list_, plug, unplug
from lmbricks.cli.adapters_compose import compose
from lmbricks.cli.adapters_options import (
    EVAL_BYTES,
    FORCE,
    OUT_BRICK,
    SEQ_LEN,
    print_effect,
)
from lmbricks.cli.adapters_route import route
from lmbricks.cli.common import command_line, console, reads_checkpoints, training_progress, user_errors
from lmbricks.cli.options import precision_option
from lmbricks.runtime import RequestedPrecision

app = typer.Typer(help="LoRA bricks: train, plug/unplug/list, compose, route, update, extract.", no_args_is_help=True)

_TARGETS = ",".join(DEFAULT_TARGETS)


@user_errors
@reads_checkpoints
def train(
    model: str = typer.Argument(..., help="base model: registry name, HF directory or .gguf"),
    out: Path = OUT_BRICK,
    domain: str = typer.Option(..., "--domain", "-d", help="corpus domain to train on (its train split)"),
    rank: int = typer.Option(8, help="LoRA rank"),
    alpha: float = typer.Option(16.0, help="LoRA alpha (update scaled by alpha/rank)"),
    steps: int = typer.Option(60, help="optimizer steps"),
    batch_size: int = typer.Option(1, help="sequences per step"),
    seq_len: int = SEQ_LEN,
    lr: float = typer.Option(2e-3, help="peak learning rate"),
    seed: int = typer.Option(0, help="seed (document order, LoRA init)"),
    eval_bytes: int = EVAL_BYTES,
    piece_bytes: int = typer.Option(
        0, help="cut documents into pieces of about this many bytes before shuffling (0: whole documents)"
    ),
    balance_sources: bool = typer.Option(False, help="give each source of the domain the same share of bytes"),
    targets: str = typer.Option(_TARGETS, help="comma-separated module names"),
    precision: RequestedPrecision = precision_option(),
    force: bool = FORCE,
) -> None:
    """Train a LoRA brick on a corpus domain (PEFT), measuring held-out perplexity before and after.

    Example: lmbricks adapters train smollm2-135m-instruct bricks/zh --domain zh --steps 30
    """
    from lmbricks.adapters import make_config, train_brick

    cfg = make_config(
        rank=rank,
        alpha=alpha,
        steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        lr=lr,
        seed=seed,
        eval_bytes=eval_bytes,
        piece_bytes=piece_bytes,
        balance_sources=balance_sources,
        targets=tuple(t for t in targets.split(",") if t),
        precision=precision,
    )
    with training_progress("training", cfg.steps) as (on_step, on_status):
        info = train_brick(model, out, cfg, domain=domain, force=force, command=command_line(), on_step=on_step,
                           on_status=on_status)  # fmt: skip
    print_effect(info, change=True)


@user_errors
@reads_checkpoints
def update(
    brick: str = typer.Argument(..., help="brick to continue training (directory or catalogue name)"),
    out: Path = OUT_BRICK,
    domain: str | None = typer.Option(None, "--domain", "-d", help="new data's domain (default: the brick's)"),
    model: str | None = typer.Option(None, "--model", "-m", help="base model (default: recorded in the brick)"),
    steps: int = typer.Option(20, help="optimizer steps"),
    lr: float = typer.Option(1e-3, help="peak learning rate"),
    seq_len: int = SEQ_LEN,
    seed: int = typer.Option(1, help="seed of the data order"),
    eval_bytes: int = EVAL_BYTES,
    precision: RequestedPrecision = precision_option(),
    force: bool = FORCE,
) -> None:
    """Continue training one brick on new data while the base stays frozen.

    Example: lmbricks adapters update bricks/smollm2-135m-instruct/math out/math2 --domain math --steps 20
    """
    from lmbricks.adapters import make_config, update_brick
    from lmbricks.adapters.catalogue import find_brick

    cfg = make_config(steps=steps, lr=lr, seq_len=seq_len, seed=seed, eval_bytes=eval_bytes, precision=precision)
    with training_progress("updating", cfg.steps) as (on_step, on_status):
        info = update_brick(find_brick(brick, model), out, cfg, model_ref=model, domain=domain, force=force,
                            command=command_line(), on_step=on_step, on_status=on_status)  # fmt: skip
    print_effect(info, change=False)


@user_errors
@reads_checkpoints
def extract(
    finetuned: str = typer.Argument(..., help="the fully fine-tuned model"),
    out: Path = OUT_BRICK,
    base: str = typer.Option(..., "--base", help="the model it was fine-tuned from"),
    rank: int = typer.Option(8, "--rank", "-r", help="LoRA rank"),
    targets: str = typer.Option(_TARGETS, help="comma-separated module names to factor"),
    sv_epsilon: float = typer.Option(0.0, help="drop singular values at or below this (per-module ranks)"),
    save_module: list[str] = typer.Option([], help="module name saved at full rank (modules_to_save); repeatable"),
    force: bool = FORCE,
) -> None:
    """Extract a LoRA brick from a full fine-tune by SVD of the weight deltas; reports the error.

    Example: lmbricks adapters extract runs/ft out/b --base smollm2-135m-instruct -r 16 --save-module embed_tokens
    """
    from lmbricks.adapters.extract import extract_brick

    names = tuple(t for t in targets.split(",") if t)
    info, ext = extract_brick(finetuned, base, rank, out, targets=names, sv_epsilon=sv_epsilon,
                              modules_to_save=tuple(save_module), force=force, command=command_line())  # fmt: skip
    worst = max(ext.module_error, key=lambda m: ext.module_error[m])
    console.print(
        f"{info.path}: rank {rank}, {len(ext.pairs)} modules, relative reconstruction error "
        f"{ext.rel_error:.4f} (worst {worst}: {ext.module_error[worst]:.4f})"
    )


# Registered in the order ``--help`` lists them.
app.command()(train)
app.command()(plug)
app.command()(unplug)
app.command(name="list")(list_)
app.command()(compose)
app.command()(route)
app.command()(update)
app.command()(extract)
