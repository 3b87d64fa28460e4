"""``lmbricks adapters``: train, catalogue, compose, route, update and extract LoRA bricks."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from lmbricks.cli.common import (
    console,
    err_console,
    print_json,
    print_list,
    progress_bar,
    reads_checkpoints,
    user_errors,
)

app = typer.Typer(help="LoRA bricks: train, plug/unplug/list, compose, route, update, extract.", no_args_is_help=True)


_FORCE = "replace OUT if lmbricks wrote it (never an input, a file or a folder of yours)"


def _command() -> str:
    return "lmbricks " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _weights(text: str | None, n: int) -> list[float] | None:
    from lmbricks.errors import ConfigError

    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"--weights: {text!r} is not a comma-separated list of numbers") from None
    if len(values) != n:
        raise ConfigError(f"--weights: {len(values)} values for {n} bricks")
    return values


@app.command()
@user_errors
@reads_checkpoints
def train(
    model: str = typer.Argument(..., help="base model: registry name, HF directory or .gguf"),
    out: Path = typer.Argument(..., help="output brick directory"),
    domain: str = typer.Option(..., "--domain", "-d", help="corpus domain to train on (its train split)"),
    rank: int = typer.Option(8, help="LoRA rank"),
    alpha: float = typer.Option(16.0, help="LoRA alpha (update scaled by alpha/rank)"),
    steps: int = typer.Option(60, help="optimizer steps"),
    batch_size: int = typer.Option(1, help="sequences per step"),
    seq_len: int = typer.Option(256, help="tokens per sequence"),
    lr: float = typer.Option(2e-3, help="peak learning rate"),
    seed: int = typer.Option(0, help="seed (document order, LoRA init)"),
    eval_bytes: int = typer.Option(12_000, help="held-out bytes scored before and after (0: skip)"),
    piece_bytes: int = typer.Option(
        0, help="cut documents into pieces of about this many bytes before shuffling (0: whole documents)"
    ),
    balance_sources: bool = typer.Option(False, help="give each source of the domain the same share of bytes"),
    targets: str = typer.Option(
        ",".join(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
        help="comma-separated module names",
    ),  # noqa: E501
    force: bool = typer.Option(False, "--force", help=_FORCE),
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
    )
    with progress_bar() as bar:
        task = bar.add_task("training", total=cfg.steps)
        info = train_brick(
            model,
            out,
            cfg,
            domain=domain,
            force=force,
            command=_command(),
            on_step=lambda s, loss: bar.update(task, completed=s, description=f"training (loss {loss:.3f})"),
            on_status=lambda msg: bar.console.print(msg),
        )
    e = info.effect
    if e.get("ppl_before") and e.get("ppl_after"):
        console.print(
            f"{info.path}: {domain} held-out ppl {e['ppl_before']:.3f} -> {e['ppl_after']:.3f} "
            f"({100 * e['ppl_change']:+.1f}%)"
        )
    else:
        console.print(f"{info.path}: written")


@app.command()
@user_errors
@reads_checkpoints
def plug(
    brick: Path = typer.Argument(..., help="brick directory"),
    model: str = typer.Option(..., "--model", "-m", help="the base model to plug it into"),
    name: str | None = typer.Option(None, help="catalogue name (default: the brick's name)"),
    force: bool = typer.Option(False, "--force", help="replace an entry of the same name"),
) -> None:
    """Add a brick to a base model's catalogue (refused if it was trained on another base).

    Example: lmbricks adapters plug bricks/smollm2-135m-instruct/zh --model smollm2-135m-instruct --name zh2
    """
    from lmbricks.adapters.catalogue import plug as plug_brick

    entry = plug_brick(brick, model, name=name, force=force)
    console.print(f"plugged {entry.brick.name} into {model}: {entry.brick.path}")


@app.command()
@user_errors
def unplug(
    name: str = typer.Argument(..., help="catalogue name"),
    model: str = typer.Option(..., "--model", "-m", help="the base model"),
) -> None:
    """Remove a plugged brick from a base model's catalogue.

    Example: lmbricks adapters unplug zh2 --model smollm2-135m-instruct
    """
    from lmbricks.adapters.catalogue import unplug as unplug_brick

    console.print(f"removed {unplug_brick(name, model)}")


@app.command(name="list")
@user_errors
def list_(
    model: str | None = typer.Option(None, "--model", "-m", help="only this base model's bricks"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List catalogued bricks: name, domain, rank, targets, measured effect, base model and its hash.

    Example: lmbricks adapters list --model smollm2-135m-instruct
    """
    from lmbricks.adapters.catalogue import list_bricks

    rows = [e.row() for e in list_bricks(model)]
    if as_json:
        print_json(rows)
        return
    table = []
    for r in rows:
        effect = (
            f"{r['ppl_before']:.3f} -> {r['ppl_after']:.3f} ({100 * r['ppl_change']:+.1f}%)"
            if r["ppl_change"] is not None
            else "-"
        )
        sha = (r["base_sha256"] or "?")[:12]
        table.append(
            (
                r["name"],
                r["source"],
                r["domain"] or "-",
                str(r["rank"]),
                ",".join(t.removesuffix("_proj") for t in r["targets"]),
                effect,
                f"{r['base_model']} ({sha})",
            )
        )
    columns = ("name", "source", "domain", "rank", "targets", "ppl before -> after", "base (sha256)")
    print_list("bricks", columns, table)


@app.command()
@user_errors
@reads_checkpoints
def compose(
    bricks: list[str] = typer.Argument(..., help="bricks (directories or catalogue names), then OUT"),
    out: Path = typer.Argument(..., help="output directory"),
    method: str = typer.Option("cat", help="cat | svd | linear | ties | dare | lorahub"),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="the base model"),
    weights: str | None = typer.Option(None, help="comma-separated weights (lorahub: searched if omitted)"),
    rank: int | None = typer.Option(None, help="output rank for svd / ties / dare"),
    density: float | None = typer.Option(None, help="kept fraction for ties (0.2) / dare (0.5)"),
    domain: str | None = typer.Option(None, help="lorahub: domain of the few-shot examples (validation split)"),
    examples: int = typer.Option(5, help="lorahub: number of few-shot examples"),
    budget: int = typer.Option(40, help="lorahub: nevergrad evaluations"),
    seed: int = typer.Option(42, help="lorahub search / dare drop seed"),
    merge: bool = typer.Option(False, "--merge", help="write base + composed update as a full model"),
    force: bool = typer.Option(False, "--force", help=_FORCE),
) -> None:
    """Combine bricks into one adapter (or, with --merge, into a model's weights).

    Example: lmbricks adapters compose zh math out/zh+math --method lorahub --domain math
    """
    from lmbricks.adapters.composer import compose_bricks

    result = compose_bricks(
        model,
        bricks,
        out,
        method=method,
        weights=_weights(weights, len(bricks)),
        rank=rank,
        density=density,
        domain=domain,
        examples=examples,
        budget=budget,
        seed=seed,
        merge=merge,
        force=force,
        command=_command(),
        on_eval=lambda i, v: err_console.print(f"lorahub eval {i}/{budget}: objective {v:.4f}", highlight=False),
    )
    console.print(
        f"{out}: {method} of {len(bricks)} bricks, weights {[round(w, 4) for w in result['weights']]}"
        + (f", relative reconstruction error {result['rel_error']:.4f}" if result["rel_error"] else "")
    )


@app.command()
@user_errors
@reads_checkpoints
def route(
    prompts: list[str] = typer.Argument(None, help="prompts to route (omit with --eval)"),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="the base model"),
    bricks: str | None = typer.Option(None, help="comma-separated bricks (default: the model's catalogue)"),
    top_k: int = typer.Option(1, help="bricks per input (weighted by similarity)"),
    temperature: float = typer.Option(0.1, help="softmax temperature of the top-k weights"),
    layer: int = typer.Option(-1, help="hidden layer of the domain centroids"),
    max_new_tokens: int = typer.Option(0, help="generate this many tokens with the routed bricks"),
    evaluate: bool = typer.Option(False, "--eval", help="measure routing accuracy and ppl on held-out texts"),
    per_domain: int = typer.Option(8, help="--eval: held-out documents per domain"),
    refresh_centroids: bool = typer.Option(False, help="recompute the cached domain centroids"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Route inputs to bricks by the nearest domain centroid of the base model's hidden states.

    Example: lmbricks adapters route "def add(a, b):" "你好" --max-new-tokens 20
    """
    from lmbricks.adapters.routing_cli import route_command

    rows = route_command(
        model,
        prompts or [],
        bricks.split(",") if bricks else None,
        top_k=top_k,
        temperature=temperature,
        layer=layer,
        max_new_tokens=max_new_tokens,
        evaluate=evaluate,
        per_domain=per_domain,
        refresh_centroids=refresh_centroids,
        status=lambda m: err_console.print(m, highlight=False),
    )
    if as_json:
        print_json(rows)
        return
    if evaluate:
        from rich.table import Table

        table = Table(title="routing on held-out texts")
        for col in ("domain", "docs", "accuracy", "ppl none", "ppl oracle", "ppl routed", "chosen"):
            table.add_column(col)
        for dom, r in rows.items():
            table.add_row(
                dom,
                str(r["docs"]),
                f"{r['accuracy']:.2f}",
                f"{r['ppl_none']:.3f}",
                f"{r['ppl_oracle']:.3f}",
                f"{r['ppl_routed']:.3f}",
                str(r["chosen"]),
            )
        console.print(table)
        return
    for r in rows["prompts"]:
        chosen = ", ".join(f"{n} ({w:.2f})" for n, w in r["bricks"])
        console.print(f"[bold]{r['prompt']!r}[/] -> {chosen}", highlight=False)
        if "completion" in r:
            console.print(r["completion"], highlight=False)


@app.command()
@user_errors
@reads_checkpoints
def update(
    brick: str = typer.Argument(..., help="brick to continue training (directory or catalogue name)"),
    out: Path = typer.Argument(..., help="output brick directory"),
    domain: str | None = typer.Option(None, "--domain", "-d", help="new data's domain (default: the brick's)"),
    model: str | None = typer.Option(None, "--model", "-m", help="base model (default: recorded in the brick)"),
    steps: int = typer.Option(20, help="optimizer steps"),
    lr: float = typer.Option(1e-3, help="peak learning rate"),
    seq_len: int = typer.Option(256, help="tokens per sequence"),
    seed: int = typer.Option(1, help="seed of the data order"),
    eval_bytes: int = typer.Option(12_000, help="held-out bytes scored before and after (0: skip)"),
    force: bool = typer.Option(False, "--force", help=_FORCE),
) -> None:
    """Continue training one brick on new data while the base stays frozen.

    Example: lmbricks adapters update bricks/smollm2-135m-instruct/math out/math2 --domain math --steps 20
    """
    from lmbricks.adapters import make_config, update_brick
    from lmbricks.adapters.catalogue import find_brick

    cfg = make_config(steps=steps, lr=lr, seq_len=seq_len, seed=seed, eval_bytes=eval_bytes)
    with progress_bar() as bar:
        task = bar.add_task("updating", total=cfg.steps)
        info = update_brick(
            find_brick(brick, model),
            out,
            cfg,
            model_ref=model,
            domain=domain,
            force=force,
            command=_command(),
            on_step=lambda s, loss: bar.update(task, completed=s, description=f"updating (loss {loss:.3f})"),
            on_status=lambda msg: bar.console.print(msg),
        )
    e = info.effect
    if e.get("ppl_change") is not None:
        console.print(f"{info.path}: {e['domain']} held-out ppl {e['ppl_before']:.3f} -> {e['ppl_after']:.3f}")
    else:
        console.print(f"{info.path}: written")


@app.command()
@user_errors
@reads_checkpoints
def extract(
    finetuned: str = typer.Argument(..., help="the fully fine-tuned model"),
    out: Path = typer.Argument(..., help="output brick directory"),
    base: str = typer.Option(..., "--base", help="the model it was fine-tuned from"),
    rank: int = typer.Option(8, "--rank", "-r", help="LoRA rank"),
    force: bool = typer.Option(False, "--force", help=_FORCE),
) -> None:
    """Extract a LoRA brick from a full fine-tune by SVD of the weight deltas; reports the error.

    Example: lmbricks adapters extract runs/ft --base smollm2-135m-instruct --rank 16 out/ft-brick
    """
    from lmbricks.adapters.extract import extract_brick

    info, ext = extract_brick(finetuned, base, rank, out, force=force, command=_command())
    worst = max(ext.module_error, key=lambda m: ext.module_error[m])
    console.print(
        f"{info.path}: rank {rank}, {len(ext.pairs)} modules, relative reconstruction error "
        f"{ext.rel_error:.4f} (worst {worst}: {ext.module_error[worst]:.4f})"
    )
