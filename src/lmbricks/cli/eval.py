"""``lmbricks eval``: perplexity and bits per byte per domain."""

from __future__ import annotations

import typer
from rich.table import Table

from lmbricks.cli.common import FORCE_HELP, console, print_json, progress_bar, reads_checkpoints, user_errors
from lmbricks.cli.options import precision_option
from lmbricks.runtime import RequestedPrecision

app = typer.Typer(help="Evaluate models.", no_args_is_help=True)


@app.command()
@user_errors
@reads_checkpoints
def ppl(
    model: str = typer.Argument("smollm2-135m-instruct", help="Registry name, model directory or GGUF."),
    domain: list[str] = typer.Option(
        None, "--domain", "-d", help="Domain to score (repeatable); default: the five main domains."
    ),
    tokens: int | None = typer.Option(None, "--tokens", help="At most this many tokens per domain."),
    n_bytes: int = typer.Option(12_000, "--bytes", help="Bytes of held-out text per domain."),
    split: str = typer.Option("test", "--split", help="Split to score: test or validation."),
    precision: RequestedPrecision = precision_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Perplexity and bits per byte of a model on the held-out split of each domain.

    Example: lmbricks eval ppl smollm2-135m-instruct --domain code --domain zh --tokens 2000
    """
    from lmbricks import load_model
    from lmbricks.eval import DEFAULT_DOMAINS, evaluate_domains, held_out_texts
    from lmbricks.runtime import inference_dtype, resolve_precision

    domains = list(domain) if domain else list(DEFAULT_DOMAINS)
    texts = held_out_texts(domains, split, n_bytes, tokens)  # before the model: an empty split fails fast
    resolved = resolve_precision(precision, "cpu")
    lm, tokenizer = load_model(model, dtype=inference_dtype(resolved))
    with progress_bar(transient=as_json) as bar:
        task = bar.add_task("scoring", total=None)

        def on_domain(name: str, n: int) -> None:
            bar.update(task, description=f"scoring {name}", total=n, completed=0)

        results = evaluate_domains(
            lm, tokenizer, domains, max_bytes=n_bytes, max_tokens=tokens, split=split,
            on_domain=on_domain, on_batch=lambda n: bar.advance(task, n), texts=texts,
        )  # fmt: skip
    if as_json:
        print_json({"model": model, "split": split, "precision": resolved,
                    "domains": {d: r.to_dict() for d, r in results.items()}})  # fmt: skip
        return
    table = Table(title=f"{model}: {split} split, {resolved}")
    for col in ("domain", "tokens", "bytes", "perplexity", "bits/byte"):
        table.add_column(col, justify="right" if col != "domain" else "left")
    for name, r in results.items():
        table.add_row(name, f"{r.tokens:,}", f"{r.bytes:,}", f"{r.ppl:.2f}", f"{r.bpb:.3f}")
    console.print(table)


@app.command()
@user_errors
@reads_checkpoints
def fewshot(
    model: str = typer.Argument("smollm2-135m-instruct", help="Registry name, model directory or GGUF."),
    task: str = typer.Option("langid", "--task", "-t", help="Task: champ (maths answers) or langid."),
    shots: list[int] = typer.Option(None, "--shots", "-k", help="Demonstrations (repeatable) [default: 0 1 2 4 8]."),
    cot: bool = typer.Option(False, "--cot", help="Chain-of-thought prompts only."),
    both: bool = typer.Option(False, "--both", help="Direct and chain-of-thought prompts."),
    n: int | None = typer.Option(None, "--n", help="Evaluate the first N items of the task's split."),
    fmt: str = typer.Option("plain", "--format", help="plain (Question:/Answer:) or chat (chat template)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Prompts per batch (transformers models)."),
    precision: RequestedPrecision = precision_option(),
    out: str | None = typer.Option(None, "--out", "-o", help="Write results.json, curve.png, report.html here."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Few-shot and chain-of-thought accuracy (exact match, Wilson 95% intervals) on a local task.

    Example: lmbricks eval fewshot smollm2-135m-instruct --task langid -k 0 -k 2 -k 8 --both --n 28 -o runs/fs
    """
    from pathlib import Path

    from lmbricks.config import validate
    from lmbricks.eval.fewshot.pipeline import FewshotJob, run_fewshot

    options = {"model": model, "task": task, "modes": [False, True] if both else [cot], "n": n, "fmt": fmt,
               "batch_size": batch_size, "out": out, "force": force, "precision": precision,
               **({"shots": shots} if shots else {})}  # fmt: skip
    job = validate(FewshotJob, options, "eval fewshot options")
    with progress_bar(transient=as_json) as bar:
        prog = bar.add_task("few-shot", total=None)

        def on_condition(name: str, count: int) -> None:
            bar.update(prog, description=name, total=count, completed=0)

        results = run_fewshot(job, on_condition, lambda k: bar.advance(prog, k))
    if as_json:
        print_json(results)
        return
    table = Table(title=f"{model}: {task} ({results['n_items']} items, {fmt} prompts)")
    for col in ("condition", "correct", "accuracy", "95% CI"):
        table.add_column(col, justify="right" if col != "condition" else "left")
    for c in results["conditions"]:
        table.add_row(
            f"{c['shots']}-shot {'CoT' if c['cot'] else 'direct'}",
            f"{c['correct']}/{c['n']}",
            f"{c['accuracy']:.3f}",
            f"[{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]",
        )
    console.print(table)
    if out is not None:
        console.print(f"report: {Path(out) / 'report.html'}", highlight=False)
