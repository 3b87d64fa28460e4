"""Entry point: ``lmbricks`` with one sub-command group per capability."""

from __future__ import annotations

import typer

from lmbricks.cli import adapters as adapters_cli
from lmbricks.cli import align as align_cli
from lmbricks.cli import analyze as analyze_cli
from lmbricks.cli import clean as clean_cli
from lmbricks.cli import data as data_cli
from lmbricks.cli import eval as eval_cli
from lmbricks.cli import generate as generate_cli
from lmbricks.cli import merge as merge_cli
from lmbricks.cli import models as models_cli
from lmbricks.cli import moe as moe_cli
from lmbricks.cli import moefy as moefy_cli
from lmbricks.cli import plugins as plugins_cli
from lmbricks.cli import proxy as proxy_cli
from lmbricks.cli import reward as reward_cli
from lmbricks.cli import sparsify as sparsify_cli
from lmbricks.cli import tokens as tokens_cli
from lmbricks.cli import tour as tour_cli
from lmbricks.cli import trace as trace_cli
from lmbricks.cli import train as train_cli
from lmbricks.runtime.allocator import ENV_VAR, tune_process
from lmbricks.version import __version__

app = typer.Typer(
    name="lmbricks",
    help="Build language models from bricks: merge, sparsify, route and compose Hugging Face checkpoints.\n\n"
    "Example: lmbricks models fetch smollm2-135m-instruct && lmbricks eval ppl smollm2-135m-instruct",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog=f"Every command first keeps large tensor buffers in the heap (glibc mallopt; see docs/performance.md). "
    f"Set {ENV_VAR}=0 to keep the C library's defaults.",
)
app.add_typer(models_cli.app, name="models")
app.add_typer(data_cli.app, name="data")
app.add_typer(eval_cli.app, name="eval")
app.command(name="tour")(tour_cli.tour)
app.add_typer(adapters_cli.app, name="adapters")
app.add_typer(proxy_cli.app, name="proxy")
merge_cli.register(app)
app.command(name="train")(train_cli.train)
app.command(name="plan")(train_cli.plan)
app.command(name="trace")(trace_cli.trace)
app.add_typer(analyze_cli.app, name="analyze")
app.command(name="moefy")(moefy_cli.moefy)
app.add_typer(sparsify_cli.app, name="sparsify")
app.add_typer(moe_cli.app, name="moe")
app.add_typer(reward_cli.app, name="reward")
app.add_typer(align_cli.app, name="align")
app.command(name="clean")(clean_cli.clean)
app.add_typer(tokens_cli.app, name="tokens")
app.command(name="generate")(generate_cli.generate)
app.add_typer(plugins_cli.app, name="plugins")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lmbricks {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(  # noqa: ARG001 (typer declares the option by it; _version acts on it)
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Build language models from bricks."""
    tune_process()  # before any work: large buffers stay in the heap (LMBRICKS_TUNE_ALLOCATOR=0 opts out)


if __name__ == "__main__":
    app()
