"""Typer arguments and options that several commands share: one definition of each flag and its help.

Use them as defaults, like ``typer.Option``::

    def fetch(model: str = model_argument("smollm2-135m-instruct"), force: bool = force_option()) -> None:

:func:`reads_checkpoints` gives a command ``--allow-pickle``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

#: The help of a model reference argument.
MODEL_HELP = "Registry name, model directory or .gguf file."
#: The help of every ``--force`` that replaces an output directory.
FORCE_HELP = "Replace an existing output that lmbricks wrote (never an input, a file or a folder of yours)."
#: The help of ``--json`` on listing commands.
JSON_HELP = "Print JSON instead of a table."
#: The help of every ``--precision`` (lmbricks.runtime.resolve_precision decides what auto means).
PRECISION_HELP = (
    "auto: bf16 where the CPU or GPU multiplies bf16 natively (AMX-BF16, AVX512-BF16, Arm BF16, CUDA >= 8.0), "
    "else fp32; training autocasts over fp32 weights, inference runs bf16 weights. fp32 reproduces the fp32 figures."
)
ALLOW_PICKLE_HELP = (
    "Also read .bin/.pt pickle checkpoints (torch.load with weights_only=True, which runs no code); "
    "by default only safetensors are read."
)


def model_argument(default: str | None = None, help: str = MODEL_HELP) -> Any:
    """The ``MODEL`` argument: required, or ``default`` (a registry name) when given."""
    return typer.Argument(... if default is None else default, help=help)


def out_option(default: Path | None = None, help: str = "Output folder.") -> Any:
    """``--out`` / ``-o``: the output folder (``default`` when not given)."""
    return typer.Option(default, "--out", "-o", help=help)


def force_option(help: str = FORCE_HELP) -> Any:
    """``--force``: replace an existing output (``help`` says what else it replaces, if anything)."""
    return typer.Option(False, "--force", help=help)


def json_option(help: str = JSON_HELP) -> Any:
    """``--json``: print JSON (nothing else on stdout) instead of tables."""
    return typer.Option(False, "--json", help=help)


def precision_option(default: str | None = "auto", help: str = PRECISION_HELP) -> Any:
    """``--precision auto|bf16|fp32`` (annotate the parameter ``RequestedPrecision``; ``None``: the config's)."""
    return typer.Option(default, "--precision", help=help)


def domains_option(help: str = "Domain (repeatable).", name: str = "--domain") -> Any:
    """A repeatable domain option (``name`` / ``-d``); None when not given."""
    return typer.Option(None, name, "-d", help=help)


def reads_checkpoints(fn: F) -> F:
    """Give a command ``--allow-pickle``: every checkpoint reader the command opens follows it.

    The option is added to the command's signature (so ``--help`` shows it) and the command runs
    inside :func:`lmbricks.checkpoint.allow_pickles` with its value.
    """
    from lmbricks.checkpoint import allow_pickles

    sig = inspect.signature(fn, eval_str=True)
    option = inspect.Parameter(
        "allow_pickle",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(False, "--allow-pickle", help=ALLOW_PICKLE_HELP),
        annotation=bool,
    )

    @wraps(fn)
    def wrapper(*args: Any, allow_pickle: bool = False, **kwargs: Any) -> Any:
        with allow_pickles(allow_pickle):
            return fn(*args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), option])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), "allow_pickle": bool}
    return wrapper  # type: ignore[return-value]
