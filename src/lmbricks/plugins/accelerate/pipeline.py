"""What ``lmbricks plugins accelerate`` calls: :func:`run_train` (a typed job in, a typed result out)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lmbricks.errors import ConfigError
from lmbricks.plugins.accelerate.config import AccelerateTrainJob

StepHook = Callable[[int, float], None]


@dataclass
class AccelerateTrained:
    """What :func:`run_train` returns."""

    out: Path
    steps: int
    first_loss: float
    last_loss: float
    cpu_seconds: float
    parameters: int


def read_texts(files: tuple[Path, ...]) -> dict[str, str]:
    """``{file stem: text}`` of UTF-8 text files.

    Raises:
        ConfigError: a file is missing, unreadable, not UTF-8 or empty (names it).
    """
    texts = {}
    for f in files:
        try:
            text = Path(f).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{f}: cannot be read as UTF-8 text ({exc})") from None
        if not text.strip():
            raise ConfigError(f"{f}: empty")
        texts[Path(f).stem] = text
    return texts


def training_batches(tokenizer: Any, texts: dict[str, str], job: AccelerateTrainJob) -> torch.Tensor:
    """(steps, B, T) token ids from ``texts`` (by domain), interleaved by domain, cycled when short.

    Raises:
        ConfigError: the texts hold fewer tokens than one sequence.
    """
    from lmbricks.data.tokens import token_chunks

    need = job.steps * job.batch_size
    per = -(-need // len(texts))
    parts = [token_chunks(tokenizer, [t], job.seq_len, per * job.seq_len) for t in texts.values()]
    rows = [p[i] for i in range(per) for p in parts if i < p.shape[0]]
    if not rows:
        raise ConfigError(f"{', '.join(texts)}: not one {job.seq_len}-token sequence of training text")
    stack = torch.stack([rows[i % len(rows)] for i in range(need)])  # (steps * B, T)
    return stack.view(job.steps, job.batch_size, job.seq_len)


def training_texts(job: AccelerateTrainJob) -> dict[str, str]:
    """The train split of each of ``job.domains`` (enough bytes for the steps), checked to be there."""
    from lmbricks.eval.domains import held_out_texts

    per = -(-job.steps * job.batch_size // len(job.domains))
    return held_out_texts(job.domains, "train", per * job.seq_len * 6)


def run_train(job: AccelerateTrainJob, command: str, on_step: StepHook | None = None) -> AccelerateTrained:
    """Train one acceleration plug-in on ``job.model`` and write it as a brick directory.

    The base is loaded in bf16 where the CPU has native bf16 (fp32 otherwise) and stays frozen; the
    plug-in's parameters are fp32. The output is checked before anything is loaded.

    Raises:
        ConfigError: a layer outside the model, an output that would overwrite an input.
    """
    from lmbricks.adapters.base import base_model
    from lmbricks.checkpoint import check_output
    from lmbricks.nn.load import load_model
    from lmbricks.nn.model import LM
    from lmbricks.plugins.accelerate.brick import save_accelerate_brick
    from lmbricks.plugins.accelerate.layers import AcceleratePlugin
    from lmbricks.plugins.accelerate.train import distill
    from lmbricks.runtime.precision import inference_dtype, resolve_precision

    base = base_model(job.model)
    check_output(job.out, {"base": base.path}, job.force)
    texts = read_texts(job.texts) if job.texts else training_texts(job)
    model, tokenizer = load_model(base.path, dtype=inference_dtype(resolve_precision("auto", "cpu")))
    if not isinstance(model, LM):
        raise ConfigError(f"{job.model}: acceleration plug-ins need a model that loads as lmbricks' LM")
    layer = job.layer if job.layer is not None else max(1, model.cfg.num_layers // 5)
    if layer >= model.cfg.num_layers:
        raise ConfigError(
            f"layer {layer}: the model has {model.cfg.num_layers} layers (use 1..{model.cfg.num_layers - 1})"
        )
    batches = training_batches(tokenizer, texts, job)
    plugin = AcceleratePlugin(model.cfg.hidden_size, job.ratio, layer, job.bottleneck)
    out = distill(model.eval(), plugin, batches, job.keep_last, job.lr, job.prefix_weight, on_step, job.max_cpu_seconds)
    measured = {"first_loss": out.losses[0], "last_loss": out.losses[-1], "steps": len(out.losses),
                "cpu_seconds": round(out.cpu_seconds, 1), "objective": "KL(base || plug-in) on the logits",
                "prefix_weight": job.prefix_weight}  # fmt: skip
    recipe = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(job).items() if k != "force"}
    recipe["layer"] = layer
    save_accelerate_brick(job.out, plugin, base, command=command, recipe=recipe, measured=measured, force=job.force)
    return AccelerateTrained(job.out, len(out.losses), out.losses[0], out.losses[-1], out.cpu_seconds,
                             plugin.num_parameters())  # fmt: skip


@dataclass
class AccelerateEval:
    """What :func:`run_eval` returns: one :func:`measure.measure_plugin` record per brick, and the base."""

    model: str
    rows: list[dict[str, Any]]


def run_eval(
    model_ref: str, bricks: tuple[Path, ...], domains: tuple[str, ...], windows: int = 4, prompt: int = 1024,
    files: tuple[Path, ...] = (),
    on_window: Callable[[int], None] | None = None,
) -> AccelerateEval:  # fmt: skip
    """Measure acceleration bricks on their base: prefill saving and bits per byte by domain.

    Every brick is read and checked against the base before the model is loaded; the plug-ins are
    switched at run time on one loaded model (the base is never changed).

    Raises:
        ConfigError: no brick, a brick for another base, an unknown or empty domain.
        CheckpointError: a brick's files are missing or malformed.
    """
    from lmbricks.adapters.base import base_model
    from lmbricks.eval.domains import held_out_texts
    from lmbricks.nn.load import load_model
    from lmbricks.plugins.accelerate.brick import load_accelerate_brick
    from lmbricks.plugins.accelerate.forward import check_plugin
    from lmbricks.plugins.accelerate.measure import measure_plugin
    from lmbricks.runtime.precision import inference_dtype, resolve_precision

    if not bricks:
        raise ConfigError("--plugin: give at least one acceleration brick directory")
    base = base_model(model_ref)
    loaded = [load_accelerate_brick(b, base) for b in bricks]
    texts = read_texts(files) if files else held_out_texts(domains)
    model, tokenizer = load_model(base.path, dtype=inference_dtype(resolve_precision("auto", "cpu")))
    rows = []
    for brick in loaded:
        check_plugin(model, brick.plugin)
        row = measure_plugin(model.eval(), tokenizer, brick.plugin, texts, windows=windows, prompt=prompt,
                             on_window=on_window)  # fmt: skip
        trained = brick.record.get("measured", {})
        rows.append({"brick": brick.path.name, "steps": trained.get("steps"),
                     "prefix_weight": trained.get("prefix_weight"), **row})  # fmt: skip
    return AccelerateEval(base.name, rows)


def run_fewshot(
    model_ref: str, bricks: tuple[Path, ...], task_name: str = "langid", shots: tuple[int, ...] = (0, 4),
    items: int = 28, on_item: Callable[[int], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Few-shot accuracy of the plain model, each brick, and the prompt truncated to each brick's cost.

    Every brick is checked against the base, and the task and shots against its demonstrations,
    before the model is loaded.

    Raises:
        ConfigError: no brick, a brick for another base, more shots than the task has demonstrations,
            fewer than one item.
        UnknownNameError: an unknown task.
    """
    from lmbricks.adapters.base import base_model
    from lmbricks.eval.fewshot.tasks import get_task
    from lmbricks.nn.load import load_model
    from lmbricks.plugins.accelerate.brick import load_accelerate_brick
    from lmbricks.plugins.accelerate.fewshot import fewshot_conditions
    from lmbricks.plugins.accelerate.forward import check_plugin
    from lmbricks.runtime.precision import inference_dtype, resolve_precision

    if not bricks:
        raise ConfigError("--plugin: give at least one acceleration brick directory")
    if items < 1:
        raise ConfigError(f"--items must be at least 1, got {items}")
    base = base_model(model_ref)
    loaded = [load_accelerate_brick(b, base) for b in bricks]
    task = get_task(task_name)
    if any(not 0 <= k <= len(task.demos) for k in shots):
        raise ConfigError(f"--shots {shots}: task {task.name} has {len(task.demos)} demonstrations")
    model, tokenizer = load_model(base.path, dtype=inference_dtype(resolve_precision("auto", "cpu")))
    for brick in loaded:
        check_plugin(model, brick.plugin)
    plugins = [b.plugin for b in loaded]
    runs = [fewshot_conditions(model.eval(), tokenizer, plugins, task, k, items, on_item) for k in shots]
    return {"model": base.name, "bricks": [b.path.name for b in loaded], "task": task.name, "runs": runs}
