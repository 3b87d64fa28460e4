"""``lmbricks proxy``: decode a model with another model's tuning (proxy-tuning)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from lmbricks.cli.common import console, print_json, reads_checkpoints, user_errors
from lmbricks.cli.options import precision_option
from lmbricks.runtime.precision import RequestedPrecision

if TYPE_CHECKING:
    import torch

app = typer.Typer(help="Proxy-tuning: logits = base + alpha * (expert - anti-expert).", no_args_is_help=True)


class _Stream:
    """Print the first sequence's tokens as they are decoded, whole characters only."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.shown: list[int] = []
        self.printed = ""

    def __call__(self, tokens: torch.Tensor) -> None:
        self.shown.append(int(tokens[0]))
        text = self.tokenizer.decode(self.shown, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            console.print(text[len(self.printed) :], end="", highlight=False, markup=False)
            self.printed = text


def _print_outputs(prompts: list[str], texts: list[str], tokens: list[list[int]], as_json: bool) -> None:
    if as_json:
        print_json(
            [{"prompt": p, "completion": t, "tokens": ids} for p, t, ids in zip(prompts, texts, tokens, strict=False)]
        )
        return
    for p, t in zip(prompts, texts, strict=False):
        console.print(f"[bold]{p}[/]{t}", highlight=False)


@app.command()
@user_errors
@reads_checkpoints
def generate(
    prompts: list[str] = typer.Argument(..., help="one or more prompts (batched with left padding)"),
    base: str = typer.Option("smollm2-135m-instruct", "--base", help="M1: the model steered"),
    expert: str | None = typer.Option(None, "--expert", help="M3: the tuned small model"),
    anti_expert: str | None = typer.Option(None, "--anti-expert", help="M2: the untuned small model"),
    expert_brick: str | None = typer.Option(None, "--expert-brick", help="make M3 = M2 + this LoRA brick"),
    alpha: float = typer.Option(1.0, "--alpha", help="strength of the steering"),
    max_new_tokens: int = typer.Option(64, help="tokens to generate per prompt"),
    temperature: float = typer.Option(0.0, help="0: greedy"),
    top_k: int = typer.Option(0, help="keep the k most likely tokens (0: off)"),
    top_p: float = typer.Option(1.0, help="nucleus sampling mass (1: off)"),
    repetition_penalty: float = typer.Option(1.0, help="penalise tokens already present (1: off)"),
    seed: int = typer.Option(0, help="sampling seed"),
    chat_base: bool = typer.Option(False, "--chat-base", help="format prompts with the base's chat template"),
    chat_expert: bool = typer.Option(False, "--chat-expert", help="... with the expert's chat template"),
    chat_anti: bool = typer.Option(False, "--chat-anti", help="... with the anti-expert's chat template"),
    no_cache: bool = typer.Option(False, "--no-cache", help="recompute every step (slow; for checks)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of streaming"),
    precision: RequestedPrecision = precision_option(),
) -> None:
    """Generate with proxy-tuning; one prompt streams to the terminal.

    Example: lmbricks proxy generate "def fib(n):" --base qwen2.5-coder-1.5b-instruct --anti-expert qwen2.5-coder-0.5b-instruct --expert-brick out/py-brick
    """  # noqa: E501
    from lmbricks.errors import ConfigError
    from lmbricks.proxy.decode import DecodeConfig, proxy_generate
    from lmbricks.proxy.load import load_trio
    from lmbricks.runtime import inference_dtype, resolve_precision

    cfg = DecodeConfig(
        alpha=alpha,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
        use_cache=not no_cache,
    )
    if any(not p.strip() for p in prompts):
        raise ConfigError("empty prompt")
    b, e, a = load_trio(
        base,
        expert,
        anti_expert,
        expert_brick=expert_brick,
        chat_base=chat_base,
        chat_expert=chat_expert,
        chat_anti=chat_anti,
        dtype=inference_dtype(resolve_precision(precision, "cpu")),
    )
    if len(prompts) == 1 and not as_json:  # one prompt streams to the terminal
        console.print(prompts[0], end="", style="bold", highlight=False, markup=False)
        proxy_generate(b, prompts, cfg, expert=e, anti=a, on_token=_Stream(b.tokenizer))
        console.print()
        return
    out = proxy_generate(b, prompts, cfg, expert=e, anti=a)
    _print_outputs(prompts, out.texts, out.tokens, as_json)
