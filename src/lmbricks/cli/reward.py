"""``lmbricks reward``: train and evaluate reward models, and the WARM experiment."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from lmbricks.cli.common import FORCE_HELP, console, print_json, progress_bar, reads_checkpoints, user_errors

app = typer.Typer(help="Reward models: Bradley-Terry training on preference pairs, WARM.", no_args_is_help=True)

_DATA_HELP = "Preference pairs: a JSONL file (prompt, chosen, rejected) or builtin:dialogue|chitchat|champ."


def _data_files(*specs: str) -> list[Path]:
    """The JSONL files that pair specs name (``builtin:`` sets are not files)."""
    files = []
    for spec in specs:
        for part in spec.split("+"):
            name = part.partition("@")[0]
            if name and not name.startswith("builtin:"):
                files.append(Path(name))
    return files


def _pairs(spec: str, split: str, limit: int | None, seed: int = 0) -> list:
    from lmbricks.reward import load_pairs

    pairs = []
    for part in spec.split("+"):  # builtin:champ@validation+builtin:champ@test
        name, _, sp = part.partition("@")
        pairs += load_pairs(name, sp or split, seed)
    return pairs[:limit] if limit else pairs


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
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Train a scalar reward head (last-token score) with the Bradley-Terry loss.

    Example: lmbricks reward train smollm2-135m-instruct builtin:dialogue runs/rm --limit 200
    """
    from lmbricks.checkpoint import check_output
    from lmbricks.config import validate
    from lmbricks.hub import reference_paths
    from lmbricks.reward import RewardTrainConfig, save_reward_model, train_reward_model

    inputs = [*reference_paths(model), *_data_files(data)]
    check_output(out, inputs, force)  # before any work
    cfg = validate(
        RewardTrainConfig,
        {"lr": lr, "epochs": epochs, "batch_size": batch_size, "seed": seed,
         "trainable_layers": trainable_layers, "max_len": max_len},
        "reward train options",
    )  # fmt: skip
    pairs = _pairs(data, "train", limit, seed)
    with progress_bar() as bar:
        task = bar.add_task("features", total=None)

        def progress(name: str, n: int | None) -> None:
            if name:
                bar.update(task, description=name, total=n, completed=0)
            elif n:
                bar.advance(task, n)

        rm, tok, history, skipped = train_reward_model(model, pairs, cfg, progress)
    save_reward_model(rm, out, tok, force=force, info={"data": data, **cfg.model_dump()}, inputs=inputs)
    last = history[-10:]
    console.print(
        f"trained on {len(pairs) - skipped} pairs ({skipped} skipped for length); "
        f"last-10-step loss {sum(h['loss'] for h in last) / len(last):.4f}; saved {out}",
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
    from lmbricks.eval.fewshot.scoring import wilson_interval
    from lmbricks.reward import encode_pairs, load_reward_model, precompute, score_features

    rm, tok = load_reward_model(reward_model)
    enc = encode_pairs(tok, _pairs(data, split, limit), max_len)
    feats = precompute(rm, enc.chosen + enc.rejected, 0)
    n = len(enc.chosen)
    scores = score_features(rm, feats, 0)
    k = int((scores[:n] > scores[n:]).sum())
    lo, hi = wilson_interval(k, n)
    res = {"pairs": n, "skipped": enc.skipped, "accuracy": k / max(n, 1), "ci95": [lo, hi],
           "mean_margin": float((scores[:n] - scores[n:]).mean()) if n else 0.0}  # fmt: skip
    if as_json:
        print_json(res)
        return
    console.print(f"{k}/{n} pairs ranked right: accuracy {res['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]", highlight=False)


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
    from lmbricks.reward import RewardTrainConfig, run_warm
    from lmbricks.reward.report import write_warm_report

    lrs = list(lr) if lr else [1e-4, 2e-4]
    cfgs = [
        validate(
            RewardTrainConfig,
            dict(lr=lrs[i % len(lrs)], seed=i, head_seed=0, epochs=epochs, trainable_layers=trainable_layers),
            f"reward warm options (member {i})",
        )
        for i in range(members)
    ]
    base = data.partition("@")[0]
    sets = {"held_out": _pairs(held_out or f"{base}@test", "test", eval_limit)}
    for s in shift or []:
        sets[s.replace("builtin:", "").replace("+", "_").replace("@", "_")] = _pairs(s, "test", eval_limit)
    with progress_bar() as bar:
        task = bar.add_task("features", total=None)

        def progress(name: str, n: int | None) -> None:
            if name:
                bar.update(task, description=name, total=n, completed=0)
            elif n:
                bar.advance(task, n)

        res = run_warm(
            model, _pairs(data, "train", limit), sets, cfgs, out, force=force, progress=progress, inits=init or None,
            inputs=_data_files(data, held_out, *(shift or [])),
        )  # fmt: skip
    write_warm_report(res, out)
    table = Table(title=f"WARM on {model}: pairwise accuracy")
    table.add_column("model")
    for name in sets:
        table.add_column(name, justify="right")
    for i, m in enumerate(res["members"]):
        table.add_row(f"member {i}", *[f"{m[n]['accuracy']:.3f}" for n in sets])
    table.add_row("mean member", *[f"{res['mean_member'][n]:.3f}" for n in sets])
    table.add_row("ensemble", *[f"{res['ensemble'][n]['accuracy']:.3f}" for n in sets])
    table.add_row("WARM (merged)", *[f"{res['warm'][n]['accuracy']:.3f}" for n in sets])
    console.print(table)
    console.print(f"results: {out / 'results.json'}; report: {out / 'report.html'}", highlight=False)
