"""``lmbricks eval fewshot`` as a pipeline: a :class:`FewshotJob` in, the results dictionary out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmbricks.errors import ConfigError
from lmbricks.eval.fewshot.run import DEFAULT_SHOTS, evaluate_fewshot


class FewshotJob(BaseModel):
    """One few-shot evaluation: a model, a task, the conditions and where the outputs go."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-135m-instruct", description="registry name, model directory or GGUF")
    task: str = Field("langid", description="champ (maths answers) or langid")
    shots: list[int] = Field(default_factory=lambda: list(DEFAULT_SHOTS), description="demonstrations per condition")
    modes: list[bool] = Field(default_factory=lambda: [False], description="chain of thought off / on")
    n: int | None = Field(None, description="evaluate the first N items of the task's split")
    fmt: str = Field("plain", description="plain (Question:/Answer:) or chat (chat template)")
    batch_size: int = Field(8, gt=0, description="prompts per batch")
    out: Path | None = Field(None, description="write results.json, curve.png, report.html here")
    force: bool = False
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 weights where the CPU has native bf16 (lmbricks.runtime), else fp32"
    )


def run_fewshot(
    job: FewshotJob,
    on_condition: Callable[[str, int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Check the job before any load, evaluate every condition, and write the outputs if ``job.out``.

    Args:
        job: the evaluation.
        on_condition: called with a description and the number of items before each condition.
        on_batch: called with the number of prompts done after each batch.

    Returns:
        ``{"model", "precision", **evaluate_fewshot(...)}`` (see :func:`lmbricks.eval.fewshot.evaluate_fewshot`).

    Raises:
        ConfigError: an unknown format or task, shots outside the task's demonstrations, or an
            output directory that is or holds the model.
    """
    from lmbricks.checkpoint import check_output
    from lmbricks.eval.fewshot.report import write_fewshot_outputs
    from lmbricks.eval.fewshot.tasks import get_task
    from lmbricks.hub import reference_paths
    from lmbricks.nn.load import load_model
    from lmbricks.runtime import inference_dtype, resolve_precision

    if job.fmt not in ("plain", "chat"):
        raise ConfigError(f"--format must be plain or chat, got {job.fmt!r}")
    if job.out is not None:
        check_output(job.out, reference_paths(job.model), job.force)  # before any load
    spec = get_task(job.task)
    if max(job.shots) > len(spec.demos) or min(job.shots) < 0:
        raise ConfigError(f"--shots must lie in 0..{len(spec.demos)} for task {job.task}")
    precision = resolve_precision(job.precision, "cpu")
    lm, tokenizer = load_model(job.model, dtype=inference_dtype(precision))
    results = evaluate_fewshot(
        lm, tokenizer, spec, job.shots, job.modes, n=job.n, fmt=job.fmt, batch_size=job.batch_size,
        on_condition=on_condition, on_batch=on_batch,
    )  # fmt: skip
    results = {"model": job.model, "precision": precision, **results}
    if job.out is not None:
        write_fewshot_outputs(results, job.out, force=job.force, inputs=reference_paths(job.model))
    return results
