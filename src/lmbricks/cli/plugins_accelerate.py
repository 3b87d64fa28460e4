"""``lmbricks plugins accelerate``: Variator acceleration plug-ins (train, eval)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lmbricks.cli.common import FORCE_HELP, command_line, console, reads_checkpoints, training_progress, user_errors
from lmbricks.cli.options import model_argument

app = typer.Typer(help="Variator: compress the hidden sequence inside a frozen LM (arXiv 2310.15724).",
                  no_args_is_help=True)  # fmt: skip


@app.command("train")
@user_errors
@reads_checkpoints
def train(
    model: str = model_argument(),
    out: Path = typer.Argument(..., help="The brick directory to write."),
    ratio: int = typer.Option(..., "--ratio", "-r", help="Tokens merged into one vector."),
    layer: int | None = typer.Option(None, "--layer", help="Layers before compressing (default: a fifth)."),
    steps: int = typer.Option(200, "--steps", help="Distillation steps."),
    batch_size: int = typer.Option(4, "--batch-size", help="Sequences per step."),
    seq_len: int = typer.Option(256, "--seq-len", help="Tokens per sequence."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    prefix_weight: float = typer.Option(
        0.1, "--prefix-weight", help="KL weight of a compressed-prefix position against a tail one (0..1)."
    ),
    max_cpu_seconds: float | None = typer.Option(None, "--max-cpu-seconds", help="Stop after this CPU time."),
    text: list[Path] = typer.Option(
        [], "--text", help="Distil on this UTF-8 file instead of the corpora (repeatable)."
    ),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Distil a compression plug-in from the frozen base (KL on the logits) and save it as a brick.

    Example: lmbricks plugins accelerate train smollm2-135m-instruct runs/r2 --ratio 2 --steps 200
    """
    from lmbricks.plugins.accelerate.config import AccelerateTrainJob
    from lmbricks.plugins.accelerate.pipeline import run_train

    job = AccelerateTrainJob(model=model, ratio=ratio, out=out, layer=layer, steps=steps, batch_size=batch_size,
                             seq_len=seq_len, lr=lr, prefix_weight=prefix_weight, texts=tuple(text),
                             max_cpu_seconds=max_cpu_seconds, force=force)  # fmt: skip
    with training_progress("distilling", steps) as (on_step, _note):
        result = run_train(job, command_line(), on_step)
    console.print(f"wrote {result.out}: {result.steps} steps, KL {result.first_loss:.3f} -> "
                  f"{result.last_loss:.3f}, {result.parameters:,} parameters", highlight=False)  # fmt: skip


@app.command("eval")
@user_errors
@reads_checkpoints
def evaluate(
    model: str = model_argument(),
    plugin: list[Path] = typer.Option(..., "--plugin", help="An acceleration brick (repeatable)."),
    domain: list[str] = typer.Option(["en_prose", "code"], "--domain", help="Domain (repeatable)."),
    windows: int = typer.Option(4, "--windows", help="256-token windows per domain."),
    prompt: int = typer.Option(1024, "--prompt", help="Prefill length timed (tokens)."),
    text: list[Path] = typer.Option([], "--text", help="Score this UTF-8 file instead of the domains (repeatable)."),
    out: Path | None = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
) -> None:
    """Prefill FLOPs and CPU time saved, bits per byte (plain, plug-in, truncated prompt) by domain.

    Example: lmbricks plugins accelerate eval smollm2-135m-instruct --plugin runs/r2 --plugin runs/r4
    """
    from lmbricks.plugins.accelerate.pipeline import run_eval

    result = run_eval(model, tuple(plugin), tuple(domain), windows, prompt, tuple(text))
    for row in result.rows:
        mean = row["bpb_mean"]
        console.print(f"{row['brick']} (r={row['ratio']}): prefill CPU saved {row['prefill_cpu_saved']:.0%}, "
                      f"FLOPs saved {row['prefill_flops_saved']:.0%}; bpb plain {mean['plain']:.3f}, "
                      f"plug-in {mean['plugin']:.3f}, truncated {mean['truncated']:.3f}", highlight=False)  # fmt: skip
    if out is not None:
        out.write_text(json.dumps({"model": result.model, "rows": result.rows}, indent=1) + "\n", encoding="utf-8")


@app.command("fewshot")
@user_errors
@reads_checkpoints
def fewshot(
    model: str = model_argument(),
    plugin: list[Path] = typer.Option(..., "--plugin", help="An acceleration brick (repeatable)."),
    task: str = typer.Option("langid", "--task", help="Few-shot task (langid or champ)."),
    shots: list[int] = typer.Option([0, 4], "--shots", "-k", help="Demonstrations (repeatable)."),
    items: int = typer.Option(28, "--items", help="Evaluation items (the task's first N)."),
    out: Path | None = typer.Option(None, "--json", help="Also write the results to this JSON file."),
) -> None:
    """Few-shot accuracy: plain model, each plug-in, and the prompt truncated to the plug-in's cost.

    Example: lmbricks plugins accelerate fewshot smollm2-135m-instruct --plugin runs/r2 -k 0 -k 4
    """
    from lmbricks.plugins.accelerate.pipeline import run_fewshot

    result = run_fewshot(model, tuple(plugin), task, tuple(shots), items)
    for run in result["runs"]:
        for c in run["conditions"]:
            console.print(f"{run['shots']}-shot {c['condition']}: {c['correct']}/{c['n']} ({c['accuracy']:.0%}); "
                          f"vs plain +{c['gained_vs_plain']} -{c['lost_vs_plain']}", highlight=False)  # fmt: skip
    if out is not None:
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
