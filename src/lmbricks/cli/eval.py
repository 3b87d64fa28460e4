"""``lmbricks eval``: perplexity and bits per byte per domain."""

from __future__ import annotations

import typer
from rich.table import Table

from lmbricks.cli.common import console, print_json, progress_bar, user_errors

app = typer.Typer(help="Evaluate models.", no_args_is_help=True)


@app.command()
@user_errors
def ppl(
    model: str = typer.Argument("smollm2-135m-instruct", help="Registry name, model directory or GGUF."),
    domain: list[str] = typer.Option(
        None, "--domain", "-d", help="Domain to score (repeatable); default: the five main domains."
    ),
    tokens: int | None = typer.Option(None, "--tokens", help="At most this many tokens per domain."),
    n_bytes: int = typer.Option(12_000, "--bytes", help="Bytes of held-out text per domain."),
    split: str = typer.Option("test", "--split", help="Split to score: test or validation."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Perplexity and bits per byte of a model on the held-out split of each domain.

    Example: lmbricks eval ppl smollm2-135m-instruct --domain code --domain zh --tokens 2000
    """
    from lmbricks import load_model
    from lmbricks.eval import DEFAULT_DOMAINS, evaluate_domains

    domains = list(domain) if domain else list(DEFAULT_DOMAINS)
    lm, tokenizer = load_model(model)
    with progress_bar(transient=as_json) as bar:
        task = bar.add_task("scoring", total=None)

        def on_domain(name: str, n: int) -> None:
            bar.update(task, description=f"scoring {name}", total=n, completed=0)

        results = evaluate_domains(
            lm, tokenizer, domains, max_bytes=n_bytes, max_tokens=tokens, split=split,
            on_domain=on_domain, on_batch=lambda n: bar.advance(task, n),
        )  # fmt: skip
    if as_json:
        print_json({"model": model, "split": split, "domains": {d: r.to_dict() for d, r in results.items()}})
        return
    table = Table(title=f"{model}: {split} split")
    for col in ("domain", "tokens", "bytes", "perplexity", "bits/byte"):
        table.add_column(col, justify="right" if col != "domain" else "left")
    for name, r in results.items():
        table.add_row(name, f"{r.tokens:,}", f"{r.bytes:,}", f"{r.ppl:.2f}", f"{r.bpb:.3f}")
    console.print(table)
