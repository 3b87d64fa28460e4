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
