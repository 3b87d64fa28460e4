"""``lmbricks tokens``: tokenizer surgery (transplant a donor's tokenizer into a model)."""

from __future__ import annotations

from pathlib import Path

import typer

from lmbricks.cli.common import command_line, console, print_json, reads_checkpoints, stage_progress, user_errors
from lmbricks.cli.options import force_option, json_option, model_argument

app = typer.Typer(
    help="Tokenizer surgery: give a model another tokenizer.\n\n"
    "Example: lmbricks tokens transplant smollm2-135m-instruct qwen2.5-coder-0.5b-instruct runs/smol-qwentok",
    no_args_is_help=True,
)


@app.command()
@user_errors
@reads_checkpoints
def transplant(
    model: str = model_argument(),
    donor: str = typer.Argument(
        ..., help="A directory with a Hugging Face tokenizer (tokenizer.json ...), or a model reference."
    ),
    out: Path = typer.Argument(..., help="Output model directory (written whole or not at all)."),
    method: str = typer.Option(
        "omp",
        "--method",
        help="How tokens the model lacks are initialised: omp (orthogonal matching pursuit in the donor's "
        "embedding space; needs a donor with weights), mean (the mean of the model's rows) or zero.",
    ),
    k: int = typer.Option(64, "--k", help="Anchor tokens per new token for omp (mergekit-tokensurgeon's default)."),
    force: bool = force_option(),
    as_json: bool = json_option("Print the result as JSON."),
) -> None:
    """Give MODEL the tokenizer of DONOR: shared tokens keep their rows bit for bit, new ones are initialised.

    The output vocabulary is the donor's; config.json's vocab_size and bos/eos/pad ids are remapped (a donor
    without the model's EOS token is refused), the donor's tokenizer files are copied, every other tensor is
    unchanged, and lmbricks.json records the inputs and the counts.

    Example: lmbricks tokens transplant smollm2-135m-instruct qwen2.5-coder-0.5b-instruct runs/smol-qwentok --method omp
    """
    from lmbricks.tokens import TransplantConfig
    from lmbricks.tokens import transplant as run

    cfg = TransplantConfig(method=method, k=k)
    with stage_progress("reading") as progress:
        result = run(model, donor, out, cfg, force=force, command=command_line(), progress=progress)
    if as_json:
        print_json({**{key: v for key, v in vars(result).items() if key != "out"}, "out": str(result.out)})
        return
    console.print(
        f"wrote {result.out}: {result.rows} tokens, {result.copied} copied from the model, {result.new} new "
        f"({result.method}{f', k {result.k}' if result.method == 'omp' else ''}), {result.padding} padding; "
        f"ids {result.ids} ({result.seconds:.1f} s)",
        highlight=False,
    )
