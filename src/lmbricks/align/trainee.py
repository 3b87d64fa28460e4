"""The policy being trained by ``lmbricks align dpo | rl``: set-up, checkpoints, exact resume, the saved result.

A run directory holds ``config.yaml``, ``log.jsonl``, ``checkpoints/step-N/`` (the layout of
:mod:`lmbricks.train.checkpoint`: the model, or for a LoRA run base + LoRA merged with ``adapter/`` and
the exact factors, plus ``trainer_state/`` with AdamW, the scheduler and the random states) and, at
the end, ``policy/`` (a Hugging Face directory whose ``lmbricks.json`` names the policy, the data and
the reward models) and, for a LoRA run, ``adapter/`` (the LoRA brick). The data order of step s is a
pure function of the seed and s, and every random state is in the checkpoint, so a resumed run takes
the same steps as an uninterrupted one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.train.lora import LoraSection

POLICY_DIR = "policy"


@dataclass
class Trainee:
    """The model being trained and what its steps need."""

    model: Any  # lmbricks.nn.LM, LoRA-injected when ``lora`` is set
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    run_dir: Path
    lora: LoraSection | None
    policy_ref: str
    start: int = 0  # the step a resumed run continues from
    sampler: Any = None  # the plain LM the policy samples with (:func:`sampling_model`), built once


def step_indices(n: int, batch: int, step: int, seed: int) -> list[int]:
    """The items of optimizer step ``step``: consecutive slices of a seeded permutation per epoch.

    A pure function of its arguments, which is what makes resume exact without a data-loader state.
    """
    out: list[int] = []
    pos = step * batch
    while len(out) < batch:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        take = perm[offset : offset + batch - len(out)]
        out += take
        pos += len(take)
    return out


def prepare_run_dir(
    run_dir: Path, inputs: Sequence[str | Path], resume: bool, force: bool, config: dict
) -> Path | None:
    """Check the run directory (apart from the inputs; checkpoints only with ``resume`` or ``force``).

    Returns:
        The newest checkpoint when resuming, else None (``force`` cleared the old run).

    Raises:
        ConfigError / CheckpointError: as ``lmbricks train`` does.
    """
    import shutil

    from lmbricks.checkpoint import check_apart
    from lmbricks.train.checkpoint import list_checkpoints

    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file; the run directory must be a directory")
    check_apart(run_dir, list(inputs))
    existing = list_checkpoints(run_dir)
    if resume and not existing:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from")
    if (existing or (run_dir / POLICY_DIR).exists()) and not resume and not force:
        raise ConfigError(f"{run_dir} already holds a run; pass resume (--resume) or force (--force)")
    if not resume:
        for name in ("checkpoints", "log.jsonl", POLICY_DIR, "adapter"):
            p = run_dir / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    return existing[-1][1] if resume else None


def make_trainee(
    model: Any, tok: Any, policy_ref: str, lora: LoraSection | None, lr: float, weight_decay: float, seed: int,
    run_dir: Path, resume_from: Path | None,
) -> Trainee:  # fmt: skip
    """Attach LoRA to the loaded policy (fp32 master weights), build AdamW, restore a checkpoint.

    Args:
        model: the initial policy (an :class:`lmbricks.nn.LM`, fp32), trained in place.
        tok: its tokenizer.
        policy_ref: its reference (recorded in the LoRA brick).
        lora: a LoRA section, or None for full fine-tuning.
        lr, weight_decay: AdamW's (betas 0.9, 0.95; constant schedule).
        seed: the LoRA initialisation's seed.
        run_dir: the run directory.
        resume_from: the checkpoint to continue from, or None.
    """
    from lmbricks.align.sample import load_policy
    from lmbricks.train import checkpoint as ckpt_io

    if lora is not None:
        from lmbricks.train.lora import attach_lora, load_lora_checkpoint

        attach_lora(model, lora, seed)
        if resume_from is not None:
            load_lora_checkpoint(model, resume_from)
    elif resume_from is not None:
        saved, _ = load_policy(str(resume_from), torch.float32)
        model.load_state_dict(saved.state_dict())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0)
    trainee = Trainee(model.train(), tok, opt, sched, run_dir, lora, policy_ref)
    if resume_from is not None:
        trainee.optimizer.load_state_dict(ckpt_io.load_state_file(resume_from, "optimizer.pt"))
        trainee.scheduler.load_state_dict(ckpt_io.load_state_file(resume_from, "scheduler.pt"))
        rng = ckpt_io.load_state_file(resume_from, "rng-rank0.pt")
        ckpt_io.set_rng_state(rng)
        trainee.start = int(ckpt_io.load_state_file(resume_from, "trainer.json")["step"])
    return trainee


def plain_model(t: Trainee) -> Any:
    """The trained policy as a plain LM (LoRA merged into a copy)."""
    if t.lora is None:
        return t.model
    from lmbricks.train.lora import merged_model

    return merged_model(t.model)


def merged_weights(model: Any) -> dict[str, Tensor]:
    """The policy's parameters as a plain LM's, by the plain LM's names: a LoRA layer's weight is its base
    weight plus its update (the value PEFT's ``merge`` writes), every other parameter itself (no copy)."""
    from lmbricks.train.lora import lora_layers

    layers = lora_layers(model)
    out: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        if ".lora_" in name:
            continue
        owner, _, leaf = name.rpartition(".")
        owner = owner.removesuffix(".base_layer")
        if owner in layers and leaf == "weight":
            out[f"{owner}.weight"] = p.detach() + layers[owner].get_delta_weight("default")
        else:
            out[f"{owner}.{leaf}"] = p.detach()
    return out


@torch.no_grad()
def sampling_model(t: Trainee, precision: str) -> Any:
    """The policy as it samples: a plain LM (LoRA merged) in the inference dtype, kept on the trainee.

    The first call builds it (a merged copy cast once); later calls write the current weights into it in
    place, layer by layer, so an RL step allocates no second model (an fp32 copy per step, freed and
    re-allocated, is what grew the process by gigabytes). Its weights equal a fresh merged copy's
    bit for bit (the same fp32 sum, the same cast).

    Args:
        t: the trainee.
        precision: ``bf16`` or ``fp32`` (:func:`lmbricks.runtime.inference_dtype`).

    Returns:
        The plain LM (eval mode), the same object at every call of a run.
    """
    import copy

    from lmbricks.runtime import inference_dtype

    dtype = inference_dtype(precision)  # type: ignore[arg-type]
    if t.sampler is None or t.sampler.embed.weight.dtype != dtype:
        m = plain_model(t)
        t.sampler = (copy.deepcopy(m) if m is t.model else m).to(dtype).eval()
        return t.sampler
    dst = dict(t.sampler.named_parameters())
    for name, value in merged_weights(t.model).items():
        dst[name].copy_(value)  # fp32 -> dtype: the rounding of ``.to(dtype)``
    return t.sampler


def save_step(t: Trainee, step: int, keep: int, command: str) -> Path:
    """Write checkpoint ``step`` (model, AdamW, scheduler, random states)."""
    from lmbricks.train import checkpoint as ckpt_io

    rng = ckpt_io.rng_state()
    path = ckpt_io.save_checkpoint(t.run_dir, step, plain_model(t), t.tokenizer, t.optimizer, t.scheduler, [rng],
                                   {"command": command})  # fmt: skip
    if t.lora is not None:
        from lmbricks.train.lora import save_lora_checkpoint

        save_lora_checkpoint(path, t.model, t.lora, t.policy_ref, step)
    ckpt_io.prune_checkpoints(t.run_dir, keep)
    return path


def save_policy(t: Trainee, command: str, recipe: dict[str, Any], inputs: dict[str, str | Path]) -> Path:
    """Write ``policy/`` (Hugging Face directory, provenance naming ``inputs``) and, for LoRA, ``adapter/``."""
    from lmbricks.checkpoint import atomic_directory
    from lmbricks.hub import resolve_model
    from lmbricks.nn.load import write_model_dir

    dest = t.run_dir / POLICY_DIR
    with atomic_directory(dest, force=True) as tmp:  # registry names are recorded by their cache directory
        prov = {"command": command, "recipe": recipe, "inputs": {k: resolve_model(v) for k, v in inputs.items()}}
        write_model_dir(plain_model(t), Path(tmp), t.tokenizer, dtype=torch.float32, provenance=prov)
    if t.lora is not None:
        from lmbricks.train.lora import ADAPTER_DIR, save_lora_brick

        save_lora_brick(t.model, t.run_dir / ADAPTER_DIR, t.lora, t.policy_ref, command=command)
    return dest


def log_line(run_dir: Path, record: dict[str, float]) -> None:
    """Append one step's record to ``log.jsonl``."""
    with open(run_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def clip_and_step(t: Trainee, grad_clip: float | None) -> Tensor | None:
    """Clip the gradients (global norm), apply AdamW and the schedule; returns the norm before clipping."""
    params = [p for p in t.model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip is not None else None
    t.optimizer.step()
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    return norm
