"""``lmbricks plugins knowledge``: knowledge plug-ins (a LoRA brick per document, routed by BM25)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lmbricks.cli.common import command_line, console, reads_checkpoints, stage_progress, user_errors
from lmbricks.cli.options import force_option, json_option, precision_option
from lmbricks.hub import DEFAULT_MODEL
from lmbricks.plugins.knowledge import config as kc
from lmbricks.runtime.precision import RequestedPrecision

SECTIONS = ",".join(kc.DEFAULT_SECTIONS)
SHUFFLED_HELP = "Sentence-shuffled copies of each document added to its training text."
app = typer.Typer(help="Knowledge plug-ins: a document becomes a LoRA brick (arXiv 2305.17660).", no_args_is_help=True)


@app.command("train")
@user_errors
@reads_checkpoints
def train(
    docs: list[Path] = typer.Argument(..., help="UTF-8 text files, one plug-in each (named by file stem)."),
    out: Path = typer.Argument(..., help="The plug-in directory to write (bricks + index.json)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model (frozen)."),
    rank: int = typer.Option(kc.DEFAULT_RANK, "--rank", help="LoRA rank."),
    steps: int = typer.Option(kc.DEFAULT_STEPS, "--steps", help="Optimizer steps per document."),
    seq_len: int = typer.Option(kc.DEFAULT_SEQ_LEN, "--seq-len", help="Tokens per training block."),
    lr: float = typer.Option(kc.DEFAULT_LR, "--lr", help="Peak learning rate."),
    shuffled: int = typer.Option(kc.DEFAULT_SHUFFLED, "--shuffled", min=0, help=SHUFFLED_HELP),
    precision: RequestedPrecision = precision_option(),
    force: bool = force_option(),
) -> None:
    """Train one knowledge plug-in per document (next-token loss, base frozen) and a BM25 routing index.

    Example: lmbricks plugins knowledge train apt.txt dpkg.txt kb/debian --steps 40
    """
    from lmbricks.plugins.knowledge.pipeline import KnowledgeTrainJob, train_knowledge

    cfg = kc.knowledge_config(rank=rank, steps=steps, seq_len=seq_len, lr=lr, precision=precision)
    job = KnowledgeTrainJob(model, tuple(str(d) for d in docs), out, cfg, force, shuffled)
    with stage_progress("reading documents") as progress:
        ks = train_knowledge(job, command_line(), progress)
    for p in ks.plugins:
        console.print(f"{p.name}: {p.bytes} bytes, loss {p.loss_first:.3f} -> {p.loss_last:.3f}", highlight=False)
    console.print(f"wrote {ks.path}", highlight=False)


@app.command("list")
@user_errors
def list_plugins(
    dirs: list[Path] = typer.Argument(..., help="Knowledge plug-in directories."),
    as_json: bool = json_option(),
) -> None:
    """List the plug-ins of knowledge plug-in directories (names untruncated).

    Example: lmbricks plugins knowledge list kb/debian --json
    """
    from lmbricks.plugins.knowledge.pipeline import read_knowledge

    rows = [p.row() | {"base_model": ks.base_model} for ks in map(read_knowledge, dirs) for p in ks.plugins]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        console.print(f"{r['name']}\t{r['bytes']} bytes\tbase {r['base_model']}\t{r['path']}", highlight=False)


@app.command("ask")
@user_errors
@reads_checkpoints
def ask(
    model: str = typer.Argument(..., help="Base model the plug-ins were trained on."),
    question: str = typer.Argument(..., help="The question."),
    plugins: list[Path] = typer.Option(..., "--plugins", "-p", help="A knowledge plug-in directory (repeatable)."),
    no_route: bool = typer.Option(False, "--no-route", help="Do not route: the base alone (unless --plugin)."),
    plugin: str | None = typer.Option(None, "--plugin", help="Force this plug-in (by name) instead of routing."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Answer length limit (greedy)."),
    precision: RequestedPrecision = precision_option(),
) -> None:
    """Route the question to a plug-in by the BM25 index, plug it in (base untouched), answer greedily.

    Example: lmbricks plugins knowledge ask smollm2-135m-instruct "Which tool installs .deb files?" -p kb/debian
    """
    from lmbricks.plugins.knowledge.answer import AskJob, ask_knowledge

    job = AskJob(model, tuple(plugins), question, not no_route, plugin, max_new_tokens, precision)
    result = ask_knowledge(job)
    typer.echo(f"plug-in: {result.plugin or '(none)'}", err=True)
    print(result.answer)


@app.command("eval")
@user_errors
@reads_checkpoints
def evaluate(
    model: str = typer.Argument(DEFAULT_MODEL, help="Base model."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: plug-ins, items.json, result.json."),
    sections: str = typer.Option(SECTIONS, "--sections", help="Debian handbook sections (multilingual/en)."),
    docs: list[Path] | None = typer.Option(
        None, "--doc", help="A text file to use instead of the sections (repeatable)."
    ),
    steps: int = typer.Option(kc.DEFAULT_STEPS, "--steps", help="Optimizer steps per plug-in."),
    rank: int = typer.Option(kc.DEFAULT_RANK, "--rank", help="LoRA rank."),
    lr: float = typer.Option(kc.DEFAULT_LR, "--lr", help="Peak learning rate."),
    shuffled: int = typer.Option(kc.DEFAULT_SHUFFLED, "--shuffled", min=0, help=SHUFFLED_HELP),
    per_document: int = typer.Option(8, "--per-document", help="Cloze items per section (at most)."),
    trained: Path | None = typer.Option(
        None, "--trained", help="Plug-ins already trained on these training parts (a run's plugins/): not retrained."
    ),
    precision: RequestedPrecision = precision_option(),
    force: bool = force_option(),
) -> None:
    """Cloze accuracy and compute per question: no document, document in the prompt, plug-in, routed plug-in.

    Example: lmbricks plugins knowledge eval smollm2-135m-instruct --sections dhcp,creating-accounts -o runs/kn
    """
    from lmbricks.plugins.knowledge.eval_pipeline import KnowledgeEvalJob, run_knowledge_eval

    names = tuple(s.strip() for s in sections.split(",") if s.strip())
    cfg = kc.knowledge_config(steps=steps, rank=rank, lr=lr, precision=precision)
    job = KnowledgeEvalJob(model, out, cfg, names, per_document=per_document, precision=precision, force=force,
                           documents=tuple(str(d) for d in docs or ()), trained=trained, shuffled=shuffled)  # fmt: skip
    with stage_progress("building items") as progress:
        result = run_knowledge_eval(job, command_line(), progress)
    for cond, row in result["conditions"].items():
        console.print(f"{cond}: accuracy {row['accuracy']:.0%}, {row['tokens_per_question']:.0f} tokens and "
                      f"{row['cpu_s_per_question']:.2f} CPU s per question", highlight=False)  # fmt: skip
    console.print(f"gain recovered {result['gain_recovered']}, CPU vs prompt {result['plugin_cpu_vs_prompt']:.2f}")
    console.print(f"wrote {out}", highlight=False)
