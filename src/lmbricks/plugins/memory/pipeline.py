"""The memory plug-in's pipelines: ``run_generate`` (``lmbricks generate``) and ``run_passkey_eval``
(``lmbricks plugins memory eval``). Typed settings in, dataclass results out."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lmbricks.config import settings
from lmbricks.errors import ConfigError
from lmbricks.plugins.memory.config import InfLLMConfig, sliding_window
from lmbricks.plugins.memory.generate import Generation, Progress, generate
from lmbricks.plugins.memory.passkey import PasskeyJob, PasskeyResult, PasskeyTrial, accuracy_heatmap, run_passkey

Memory = Literal["infllm", "sliding", "none"]


@settings
class GenerateJob:
    """One long-prompt completion.

    Attributes:
        model: a registry name or model directory (lmbricks' LM, or Llama/Qwen2 through transformers).
        prompt_file: a UTF-8 text file with the prompt.
        memory: "infllm", "sliding" (its sinks + window, nothing retrieved) or "none" (the plain model).
        max_new_tokens: greedy tokens to generate (stops at the end-of-sequence token).
        precision: "auto", "bf16" or "fp32" weights (see ``lmbricks.runtime``).
        infllm: the memory settings.
        memory_brick: a directory from ``lmbricks plugins memory save``; its settings replace
            ``infllm``, and it is refused for another base than ``model``.
        griffin: with ``memory`` "none" only, the fraction of FFN neurons kept while generating,
            chosen once from the prompt (GRIFFIN); None keeps the dense FFNs.
    """

    model: str
    prompt_file: Path
    memory: Memory = "infllm"
    max_new_tokens: int = Field(default=64, ge=1)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    infllm: InfLLMConfig = field(default_factory=InfLLMConfig)
    memory_brick: Path | None = None
    griffin: float | None = Field(default=None, gt=0.0, le=1.0)


@dataclass
class TextGeneration:
    """What :func:`run_generate` returns: the completion and the generation's figures."""

    text: str
    generation: Generation
    precision: str


def read_prompt(path: Path) -> str:
    """The prompt file's text.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8 or empty (names it).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"prompt_file: {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"prompt_file: {path}: cannot read as UTF-8 text ({exc})") from None
    if not text.strip():
        raise ConfigError(f"prompt_file: {path}: empty")
    return text


def _load(model: str, precision: str) -> tuple[Any, Any, str]:
    from lmbricks.nn.load import load_model
    from lmbricks.runtime.precision import inference_dtype, resolve_precision

    resolved = resolve_precision(precision, "cpu")
    lm, tokenizer = load_model(model, dtype=inference_dtype(resolved))
    return lm.eval(), tokenizer, resolved


def memory_settings(memory: Memory, infllm: InfLLMConfig) -> InfLLMConfig | None:
    """The settings ``generate`` takes for a ``memory`` choice (None: the plain model)."""
    return None if memory == "none" else infllm if memory == "infllm" else sliding_window(infllm)


def job_memory(job: GenerateJob) -> InfLLMConfig | None:
    """The memory settings of ``job``: its brick's (checked against its model) or its own ``infllm``.

    Raises:
        CheckpointError: ``memory_brick`` is not a memory brick.
        ConfigError: the brick was saved for another base.
    """
    if job.memory_brick is None:
        return memory_settings(job.memory, job.infllm)
    from lmbricks.adapters.base import base_model
    from lmbricks.plugins.memory.brick import load_memory_brick

    return memory_settings(job.memory, load_memory_brick(job.memory_brick, base_model(job.model)))


def run_generate(job: GenerateJob, progress: Progress | None = None) -> TextGeneration:
    """Read the prompt, load the model, generate greedily with the chosen memory.

    Args:
        job: what to run.
        progress: called with (tokens prefilled, prompt tokens).

    Returns:
        A :class:`TextGeneration`.

    Raises:
        ConfigError: a bad prompt file or a memory brick of another base (checked before the model
            loads), a window that does not fit the model, a model whose attention cannot be wrapped.
        CheckpointError: ``memory_brick`` is not a memory brick.
    """
    text = read_prompt(job.prompt_file)
    memory = job_memory(job)
    if job.griffin is not None and memory is not None:
        raise ConfigError("--griffin runs with the plain model only: give --memory none")
    model, tokenizer, resolved = _load(job.model, job.precision)
    import torch

    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    out = generate(model, ids, memory, job.max_new_tokens, tokenizer.eos_token_id, progress, job.griffin)
    return TextGeneration(tokenizer.decode(out.tokens, skip_special_tokens=True), out, resolved)


@settings
class PasskeyEvalJob:
    """A passkey evaluation of one model, written to ``out`` (trials.json + one heat map per method).

    Attributes:
        model: a registry name or model directory.
        passkey: lengths, depths, methods, samples, filler.
        infllm: the InfLLM settings (also the sliding window's).
        precision: "auto", "bf16" or "fp32" weights.
        out: the output folder (written whole, then renamed into place), or None to write nothing.
        force: replace an ``out`` lmbricks wrote before.
    """

    model: str
    passkey: PasskeyJob = field(default_factory=PasskeyJob)
    infllm: InfLLMConfig = field(default_factory=InfLLMConfig)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    out: Path | None = None
    force: bool = False


def run_passkey_eval(
    job: PasskeyEvalJob,
    progress: Callable[[PasskeyTrial], None] | None = None,
    command: str = "lmbricks.plugins.memory.pipeline.run_passkey_eval",
) -> PasskeyResult:
    """Run every trial of ``job.passkey``; write ``lmbricks.json``, trials.json and heat maps to ``job.out``.

    Args:
        job: what to run.
        progress: called after each trial.
        command: the command line recorded in ``lmbricks.json``.

    Returns:
        The :class:`PasskeyResult`.

    Raises:
        ConfigError: ``out`` refused by the input guard (checked before the model loads), a window
            that does not fit the model.
    """
    from lmbricks.checkpoint.atomic import atomic_directory
    from lmbricks.checkpoint.guard import check_output
    from lmbricks.checkpoint.provenance import write_provenance

    if job.out is not None:
        check_output(job.out, force=job.force)
    model, tokenizer, _ = _load(job.model, job.precision)
    result = run_passkey(model, tokenizer, job.passkey, job.infllm, progress)
    if job.out is not None:
        with atomic_directory(job.out, force=job.force) as tmp:
            recipe = {
                "kind": "memory-eval",
                "model": job.model,
                "passkey": asdict(job.passkey),
                "infllm": asdict(job.infllm),
            }
            write_provenance(tmp, command=command, recipe=recipe, inputs={})
            (tmp / "trials.json").write_text(json.dumps([asdict(t) for t in result.trials], indent=1))
            for method in job.passkey.methods:
                accuracy_heatmap(result, method, tmp / f"infllm_passkey_{method}.png")
    return result
