"""``lmbricks generate``: greedy completion of a (long) prompt file, with or without InfLLM memory."""

from __future__ import annotations

from pathlib import Path

import typer

from lmbricks.cli.common import console, print_json, progress_bar, reads_checkpoints, user_errors
from lmbricks.cli.options import model_argument, precision_option
from lmbricks.runtime.precision import RequestedPrecision


@user_errors
@reads_checkpoints
def generate(
    model: str = model_argument(),
    prompt_file: Path = typer.Option(..., "--prompt-file", help="UTF-8 text file with the prompt."),
    memory: str = typer.Option(
        "infllm",
        "--memory",
        help="infllm | sliding (sinks + window) | none (plain model) | a memory brick directory "
        "(`lmbricks plugins memory save`: its settings replace --window/--top-k/--chunk-size).",
    ),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Greedy tokens to generate."),
    window: int = typer.Option(4096, "--window", help="InfLLM local window (tokens)."),
    top_k: int = typer.Option(16, "--top-k", help="InfLLM memory blocks retrieved per chunk."),
    chunk_size: int = typer.Option(512, "--chunk-size", help="Prefill chunk (tokens)."),
    griffin: float | None = typer.Option(
        None,
        "--griffin",
        help="With --memory none: keep this fraction of each FFN's neurons while generating, chosen once "
        "from the prompt (GRIFFIN, arXiv 2404.01365; docs/emergent-bricks.md).",
    ),
    precision: RequestedPrecision = precision_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the completion and timings as JSON."),
) -> None:
    """Complete a prompt file greedily: the completion on stdout, progress on stderr.

    InfLLM (arXiv 2402.04617) keeps the past as blocks of key/value states and lets every chunk
    attend to the first tokens, the local window and the best-matching blocks, so a model reads far
    past its trained window. See docs/plugins.md.

    Example: lmbricks generate smollm2-135m-instruct --memory infllm --prompt-file long.txt --max-new-tokens 32

    Example: lmbricks generate smollm2-135m-instruct --memory none --griffin 0.5 --prompt-file prompt.txt
    """
    from lmbricks.errors import ConfigError
    from lmbricks.plugins.memory.config import InfLLMConfig
    from lmbricks.plugins.memory.pipeline import GenerateJob, run_generate

    brick = None
    if memory not in ("infllm", "sliding", "none"):
        if not Path(memory).expanduser().is_dir():
            raise ConfigError(f"--memory: {memory!r} is not one of infllm, sliding, none, nor a memory brick directory")
        brick, memory = Path(memory).expanduser(), "infllm"
    infllm = InfLLMConfig(window=window, top_k=top_k, chunk_size=chunk_size)
    job = GenerateJob(model, prompt_file, memory, max_new_tokens, precision, infllm, brick, griffin)  # type: ignore[arg-type]
    with progress_bar(transient=True) as bar:
        task = bar.add_task("prefill", total=None)
        result = run_generate(job, lambda done, total: bar.update(task, completed=done, total=total))
    g = result.generation
    if as_json:
        print_json({"completion": result.text, "tokens": g.tokens, "prompt_tokens": g.prompt_tokens,
                    "prefill_s": g.prefill_s, "decode_s": g.decode_s, "memory_mb": g.memory_mb,
                    "blocks": g.blocks, "precision": result.precision})  # fmt: skip
        return
    console.print(result.text, highlight=False, markup=False, soft_wrap=True)
