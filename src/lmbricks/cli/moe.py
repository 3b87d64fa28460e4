"""``lmbricks moe``: grow mixture-of-experts models (upcycle, assemble, grow)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from lmbricks.cli.common import command_line, console, err_console, reads_checkpoints, user_errors
from lmbricks.cli.options import force_option

app = typer.Typer(
    help="Grow mixture-of-experts models from dense checkpoints, fine-tunes and LoRA bricks.\n\n"
    "Example: lmbricks moe upcycle smollm2-135m-instruct runs/smol-8x --experts 8 --top-k 2",
    no_args_is_help=True,
)


@contextmanager
def _shown_warnings() -> Iterator[None]:
    """Print the library's warnings (nearly collinear routers...) as yellow lines on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        from lmbricks.grow import GrowWarning

        if issubclass(w.category, GrowWarning):
            err_console.print(f"[yellow]warning:[/] {w.message}", highlight=False)


def _status() -> tuple[Any, Callable[[str], None]]:
    status = err_console.status("starting")
    return status, lambda msg: status.update(msg)


@app.command("upcycle")
@user_errors
@reads_checkpoints
def upcycle(
    model: str = typer.Argument(..., help="Dense model: registry name or Hugging Face directory."),
    out: Path = typer.Argument(..., help="Output directory (must not exist)."),
    experts: int = typer.Option(..., "--experts", "-e", help="Experts per MoE layer."),
    top_k: int = typer.Option(..., "--top-k", "-k", help="Experts per token."),
    every: int = typer.Option(1, "--every", help="MoE every N layers (N > 1: Qwen2-MoE layout)."),
    noise: float = typer.Option(0.0, "--noise", help="Relative std of noise on each expert copy (0: exact)."),
    shared_expert: bool = typer.Option(False, "--shared-expert", help="Add a shared expert (Qwen2-MoE)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the router init and the noise."),
    dtype: str | None = typer.Option(None, "--dtype", help="float32, bfloat16 or float16 (default: input's)."),
    force: bool = force_option(),
) -> None:
    """Sparse upcycling: copy each FFN into E experts with a new router; equals the dense model at init.

    Example: lmbricks moe upcycle smollm2-135m-instruct runs/smol-4x --experts 4 --top-k 2
    """
    from lmbricks.grow import upcycle as run

    with err_console.status("upcycling"):
        path = run(
            model,
            out,
            experts=experts,
            top_k=top_k,
            every=every,
            noise=noise,
            shared_expert=shared_expert,
            seed=seed,
            dtype=dtype,
            force=force,
            command=command_line(),
        )
    console.print(f"wrote {path}")


@app.command("assemble")
@user_errors
@reads_checkpoints
def assemble(
    recipe: Path = typer.Argument(..., help="mergekit-moe YAML recipe (plus lmbricks' brick/domain fields)."),
    out: Path = typer.Argument(..., help="Output directory (must not exist)."),
    force: bool = force_option(),
    validate_only: bool = typer.Option(False, "--validate", help="Check the recipe and inputs, write nothing."),
) -> None:
    """Assemble an MoE from fine-tunes and bricks of one base (mergekit-moe, Branch-Train-MiX).

    Writes Mixtral, Qwen2-MoE (with shared experts) or, over a Qwen3 base, Qwen3-MoE; with
    `architecture: deepseek`, DeepSeek-MoE's layout (ungated shared experts) exactly as Qwen2-MoE
    (`deepseek_as: qwen2_moe`) or with DeepSeek-V3's group-limited sigmoid router (`n_group`,
    `topk_group`) as Glm4-MoE (`deepseek_as: glm4_moe`).

    Example: lmbricks moe assemble docs/grow/four-bricks.yaml runs/smol-4-bricks
    """
    from lmbricks.grow import assemble as run
    from lmbricks.grow import load_moe_recipe, plan_assembly

    r = load_moe_recipe(recipe)
    if validate_only:
        with _shown_warnings():
            plan = plan_assembly(r, out, force, inputs=[recipe])
        plan.close()
        console.print(f"ok: {len(r.experts)} experts, top-{r.experts_per_token}, gate_mode {r.gate_mode}")
        return
    status, log = _status()
    with _shown_warnings(), status:
        path = run(recipe, out, force=force, log=log, command=command_line())
    console.print(f"wrote {path}")


@app.command("grow")
@user_errors
@reads_checkpoints
def grow(
    moe_model: str = typer.Argument(..., help="The MoE to grow (Mixtral / Qwen2-MoE / lmbricks directory)."),
    out: Path = typer.Argument(..., help="Output directory (must not exist)."),
    expert: str = typer.Option(..., "--expert", help="New expert: fine-tune dir, registry name, path+lora, or brick."),
    domain: str = typer.Option(..., "--domain", help="Corpus domain that initialises its router row."),
    base: str | None = typer.Option(None, "--base", help="Dense base (default: recorded in lmbricks.json)."),
    domain_tokens: int = typer.Option(2048, "--domain-tokens", help="Training tokens read from the domain."),
    dtype: str | None = typer.Option(None, "--dtype", help="float32, bfloat16 or float16 (default: the MoE's)."),
    force: bool = force_option(),
) -> None:
    """Add an expert to an MoE (FFN from a fine-tune or brick, router row from a domain); keep the rest.

    Example: lmbricks moe grow runs/smol-4-bricks runs/smol-5 --expert my-brick --domain en_prose
    """
    from lmbricks.grow import grow as run

    status, log = _status()
    with _shown_warnings(), status:
        path = run(
            moe_model,
            expert,
            out,
            domain=domain,
            base=base,
            domain_tokens=domain_tokens,
            dtype=dtype,
            force=force,
            log=log,
            command=command_line(),
        )
    console.print(f"wrote {path}")
