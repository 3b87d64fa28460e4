"""Options and helpers shared by the ``lmbricks adapters`` commands (one typer option object per option)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from lmbricks.cli.common import console

if TYPE_CHECKING:
    from lmbricks.adapters.brick import BrickInfo

DEFAULT_MODEL = "smollm2-135m-instruct"

FORCE = typer.Option(
    False, "--force", help="replace OUT if lmbricks wrote it (never an input, a file or a folder of yours)"
)
MODEL = typer.Option(DEFAULT_MODEL, "--model", "-m", help="the base model")
AS_JSON = typer.Option(False, "--json", help="print JSON")
SEQ_LEN = typer.Option(256, help="tokens per sequence")
EVAL_BYTES = typer.Option(12_000, help="held-out bytes scored before and after (0: skip)")
OUT_BRICK = typer.Argument(..., help="output brick directory")


def parse_weights(text: str | None, n: int) -> list[float] | None:
    """``--weights``: a comma-separated list of ``n`` numbers (None when the option is not given)."""
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


def print_effect(info: BrickInfo, change: bool) -> None:
    """The written brick and its held-out perplexity before -> after (with the relative ``change``)."""
    e = info.effect
    if e.get("ppl_change") is None:
        console.print(f"{info.path}: written")
        return
    text = f"{e['ppl_before']:.3f} -> {e['ppl_after']:.3f}"
    console.print(
        f"{info.path}: {e['domain']} held-out ppl {text}" + (f" ({100 * e['ppl_change']:+.1f}%)" if change else "")
    )
