"""Typed settings of ``lmbricks align``: a pydantic model per command, validated by :mod:`lmbricks.config`.

Prompts are named by a *prompt spec*: a preference-pair spec (``builtin:dialogue@test``, a pairs
JSONL; the pairs' prompts are used, each once), a JSONL file of ``{"prompt": ...}`` objects, or a
text file with one prompt per line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lmbricks.align.sample import SamplingConfig
from lmbricks.errors import ConfigError
from lmbricks.train.lora import LoraSection


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Precision = Literal["auto", "bf16", "fp32"]


class BestOfNJob(_Strict):
    """``lmbricks align best-of-n``: sample max(ns) responses per prompt, score them, keep the best."""

    policy: str = Field(description="the policy: registry name or model directory")
    reward_models: list[str] = Field(
        default_factory=list, description="reward-model directories; several: the mean of their predictions"
    )
    prompts: str = Field(description="prompt spec (pairs spec, JSONL with 'prompt', or one prompt per line)")
    ns: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64], min_length=1)
    limit: int | None = Field(None, ge=0, description="use the first N prompts (0 or None: all)")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig.model_validate({}))
    seed: int = 0
    precision: Precision = Field("auto", description="auto: bf16 weights where the CPU has native bf16")

    @field_validator("ns")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError("every n must be at least 1")
        return sorted(set(v))


def _prompt_lines(path: Path) -> list[str]:
    from lmbricks.sft.schema import jsonl_records, read_text

    lines = read_text(path).splitlines()
    if path.suffix != ".jsonl":
        return [line for line in lines if line.strip()]
    out = []
    for where, obj in jsonl_records(lines, str(path)):
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise ConfigError(f"{where}: expected an object with a string 'prompt'")
        out.append(obj["prompt"])
    return out


def load_prompts(spec: str, limit: int | None = None, split: str = "test") -> list[str]:
    """The prompts a prompt spec names (duplicates of a pairs file kept once, in order).

    Raises:
        ConfigError: a missing file, a malformed record, or no prompt at all.
    """
    from lmbricks.reward.pipeline import load_pair_spec

    path = Path(spec.partition("@")[0])
    if spec.startswith("builtin:") or (path.suffix == ".jsonl" and _is_pairs(path)):
        prompts = list(dict.fromkeys(p.prompt for p in load_pair_spec(spec, split, None)))
    else:
        if not path.is_file():
            raise ConfigError(f"prompts {spec!r}: no such file")
        prompts = _prompt_lines(path)
    prompts = prompts[:limit] if limit else prompts
    if not prompts:
        raise ConfigError(f"prompts {spec!r}: no prompt found")
    return prompts


def _is_pairs(path: Path) -> bool:
    """Whether a JSONL file's first record is a preference pair (has 'chosen')."""
    if not path.is_file():
        raise ConfigError(f"prompts {str(path)!r}: no such file")
    import json

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                return isinstance(obj := json.loads(line), dict) and "chosen" in obj
            except json.JSONDecodeError:
                return False
    return False


class OptimSection(_Strict):
    """AdamW (betas 0.9, 0.95) with a constant learning rate."""

    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0, description="max global gradient norm; null disables")


class DPOJob(_Strict):
    """``lmbricks align dpo CONFIG.yaml OUT``: DPO of a policy on preference pairs, reference = the initial policy.

    Example::

        policy: smollm2-135m-instruct
        data: builtin:dialogue
        limit: 64
        lora: {rank: 8, alpha: 16}
        steps: 8
        batch_size: 8
        beta: 0.1
        optim: {lr: 1.0e-4}
    """

    policy: str = Field(description="the initial policy (also the reference): registry name or model directory")
    data: str = Field(description="pair spec: builtin:dialogue|chitchat|champ[@split] or a pairs JSONL")
    limit: int | None = Field(None, ge=0, description="use the first N pairs (0 or None: all)")
    lora: LoraSection | None = Field(None, description="train a LoRA brick instead of the weights")
    steps: int = Field(ge=0, description="optimizer steps (0: the policy is saved unchanged)")
    batch_size: int = Field(8, gt=0, description="pairs per step")
    beta: float = Field(0.1, gt=0, description="DPO's KL strength")
    optim: OptimSection = Field(default_factory=lambda: OptimSection.model_validate({}))
    max_len: int = Field(512, gt=4, description="pairs longer than this (prompt + response tokens) are skipped")
    chat: bool = Field(True, description="prompts in the policy's chat template (when it has one)")
    precision: Precision = Field("auto", description="auto: bf16 autocast over fp32 weights where native")
    recompute: bool = Field(
        True, description="recompute each block's activations in the backward pass (same gradients, less memory)"
    )
    checkpoint_every: int = Field(50, gt=0)
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 0


class RLJob(_Strict):
    """``lmbricks align rl CONFIG.yaml OUT``: GRPO or RLOO against reward models with a KL penalty to the
    initial policy.

    Example::

        policy: smollm2-135m-instruct
        reward_models: [runs/rm]      # several: the mean of their predictions; a WARM directory is one
        prompts: builtin:dialogue@train
        lora: {rank: 8, alpha: 16}
        algorithm: rloo
        steps: 4
        prompts_per_step: 16
        samples_per_prompt: 4
        kl_coef: 0.05
        sampling: {max_new_tokens: 64}
    """

    policy: str = Field(description="the initial policy (also the KL reference)")
    reward_models: list[str] = Field(
        default_factory=list, description="reward-model directories; several: the mean of their predictions"
    )
    prompts: str = Field(description="prompt spec (pairs spec, JSONL with 'prompt', or one prompt per line)")
    limit: int | None = Field(None, ge=0, description="use the first N prompts (0 or None: all)")
    algorithm: Literal["rloo", "grpo"] = Field("rloo", description="advantage estimator")
    lora: LoraSection | None = Field(None, description="train a LoRA brick instead of the weights")
    steps: int = Field(ge=0, description="optimizer steps (0: the policy is saved unchanged)")
    prompts_per_step: int = Field(16, gt=0)
    samples_per_prompt: int = Field(4, ge=2, description="k responses per prompt (the group)")
    kl_coef: float = Field(0.05, ge=0, description="weight of the k3 KL(policy || reference) penalty")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig.model_validate({}))
    optim: OptimSection = Field(default_factory=lambda: OptimSection.model_validate({}))
    precision: Precision = Field("auto", description="auto: bf16 autocast over fp32 weights where native")
    recompute: bool = Field(
        True,
        description="recompute each block's activations in the update's backward pass (same gradients, less memory)",
    )
    checkpoint_every: int = Field(50, gt=0)
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 0
