"""``lmbricks plugins``: plug-in bricks beyond task adapters (``memory``: InfLLM long-context memory)."""

from __future__ import annotations

from pathlib import Path

import typer

from lmbricks.cli.common import FORCE_HELP, command_line, console, err_console, reads_checkpoints, user_errors
from lmbricks.cli.options import model_argument, precision_option
from lmbricks.cli.plugins_knowledge import app as knowledge_app
from lmbricks.runtime.precision import RequestedPrecision

app = typer.Typer(help="Plug-in bricks: memory (InfLLM), accelerate (Variator).", no_args_is_help=True)
memory_app = typer.Typer(help="InfLLM: training-free context memory (arXiv 2402.04617).", no_args_is_help=True)
app.add_typer(memory_app, name="memory")
app.add_typer(knowledge_app, name="knowledge")


def _items(option: str, text: str, kind: type) -> tuple:
    from lmbricks.errors import ConfigError

    try:
        return tuple(kind(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not a comma-separated list of {kind.__name__}") from None


@memory_app.command("eval")
@user_errors
@reads_checkpoints
def memory_eval(
    model: str = model_argument(),
    lengths: str = typer.Option("4096,16384,32768", "--lengths", help="Prompt lengths in tokens, comma-separated."),
    depths: str = typer.Option("0,0.25,0.5,0.75,1", "--depths", help="Depths of the key (0 = start, 1 = end)."),
    methods: str = typer.Option("plain,sliding,infllm", "--methods", help="Among plain, sliding, infllm."),
    samples: int = typer.Option(1, "--samples", help="Keys per (length, depth) cell."),
    filler: str = typer.Option("synthetic", "--filler", help="synthetic sentences, or real (a book from en_prose)."),
    window: int = typer.Option(4096, "--window", help="InfLLM local window (tokens)."),
    top_k: int = typer.Option(16, "--top-k", help="Memory blocks retrieved per chunk."),
    chunk_size: int = typer.Option(512, "--chunk-size", help="Prefill chunk (tokens)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write lmbricks.json, trials.json and heat maps here."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    precision: RequestedPrecision = precision_option(),
) -> None:
    """Passkey retrieval: accuracy by length and depth for the plain model, a sliding window and InfLLM.

    Example: lmbricks plugins memory eval smollm2-135m-instruct --lengths 4096,16384 --depths 0,0.5,1 --out runs/passkey
    """
    from lmbricks.plugins.memory.config import InfLLMConfig
    from lmbricks.plugins.memory.passkey import PasskeyJob
    from lmbricks.plugins.memory.pipeline import PasskeyEvalJob, run_passkey_eval

    passkey = PasskeyJob(_items("--lengths", lengths, int), _items("--depths", depths, float),
                         _items("--methods", methods, str), samples, filler)  # type: ignore[arg-type]  # fmt: skip
    job = PasskeyEvalJob(
        model, passkey, InfLLMConfig(window=window, top_k=top_k, chunk_size=chunk_size), precision, out, force
    )

    def show(t: object) -> None:
        err_console.print(t, highlight=False, markup=False, soft_wrap=True)

    result = run_passkey_eval(job, show, command_line())
    for method in passkey.methods:
        cells = ", ".join(f"{n}: {result.accuracy(method, n):.0%}" for n in passkey.lengths)
        console.print(f"{method}: {cells}", highlight=False)
    if out is not None:
        console.print(f"wrote {out}", highlight=False)


from lmbricks.cli import plugins_accelerate  # noqa: E402

app.add_typer(plugins_accelerate.app, name="accelerate")


@memory_app.command("save")
@user_errors
@reads_checkpoints
def memory_save(
    model: str = model_argument(),
    out: Path = typer.Argument(..., help="The brick directory to write."),
    window: int = typer.Option(4096, "--window", help="InfLLM local window (tokens)."),
    top_k: int = typer.Option(16, "--top-k", help="Memory blocks retrieved per chunk."),
    chunk_size: int = typer.Option(512, "--chunk-size", help="Prefill chunk (tokens)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Save an InfLLM configuration for MODEL as a memory brick (kind memory, base identity, settings).

    Example: lmbricks plugins memory save smollm2-135m-instruct runs/memory --window 2048
    """
    from lmbricks.adapters.base import base_model
    from lmbricks.plugins.memory.brick import save_memory_brick
    from lmbricks.plugins.memory.config import InfLLMConfig

    cfg = InfLLMConfig(window=window, top_k=top_k, chunk_size=chunk_size)
    save_memory_brick(out, cfg, base_model(model), command=command_line(), force=force)
    console.print(f"wrote {out}", highlight=False)
