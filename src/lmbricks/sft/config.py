"""The ``sft:`` section of a training YAML (``task: sft``), validated by pydantic. Example::

task: sft
init_from: smollm2-135m-instruct
sft:
  sources: [dialogue]            # built-in corpora: dialogue, champ
  jsonl: [my-chats.jsonl]        # and/or your own files (schema: lmbricks.sft.schema)
  seq_len: 256
  max_examples: 400
  freeze: [routers]              # MoE: routers | experts | non_expert | embeddings
  expert_lr_scale: 0.5           # separate learning rate for expert weights
steps: 50
batch_size: 8
optim: {lr: 1.0e-5}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Freezable = Literal["routers", "experts", "non_expert", "embeddings"]


class SFTConfig(BaseModel):
    """Instruction-tuning data, masking, parameter selection and held-out evaluation."""

    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(default_factory=list, description="built-in corpora: dialogue, champ")
    jsonl: list[Path] = Field(default_factory=list, description="JSONL files of prompt/response or messages")
    eval_jsonl: list[Path] = Field(
        default_factory=list, description="held-out JSONL; default: the sources' validation split"
    )
    seq_len: int = Field(512, gt=8, description="tokens per packed block; longer examples are errors")
    drop_long: bool = Field(False, description="skip (and count) examples longer than seq_len instead")
    max_examples: int | None = Field(None, gt=0, description="cap per source / file, taken in order")
    max_turns: int = Field(4, gt=0, description="dialogue: exchanges per example window")
    eval_examples: int = Field(32, ge=0, description="held-out examples for the response-only loss")
    eval_every: int | None = Field(None, gt=0, description="steps between held-out evaluations")
    generations: int = Field(3, ge=0, description="held-out prompts answered greedily in the report")
    max_new_tokens: int = Field(64, gt=0)
    freeze: list[Freezable] = Field(default_factory=list, description="parameter groups kept frozen")
    train_last_layers: int | None = Field(
        None, gt=0, description="train only the last N layers (plus final norm and head)"
    )
    expert_lr_scale: float = Field(1.0, gt=0, description="lr multiplier for MoE expert weights")
    router_lr_scale: float = Field(1.0, gt=0, description="lr multiplier for MoE router weights")

    @model_validator(mode="after")
    def _some_source(self) -> SFTConfig:
        if not self.sources and not self.jsonl:
            raise ValueError("give sft.sources or sft.jsonl")
        if "non_expert" in self.freeze and "experts" in self.freeze:
            raise ValueError("freezing both experts and non_expert parameters leaves nothing to train")
        return self
