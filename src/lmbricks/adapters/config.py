"""Typed settings of a LoRA brick's training run (validated before any work, naming the field)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lmbricks.config import one_of, validate

#: Attention and MLP projections of Llama-family models. The MLP ones are included so that a brick
#: can later become an expert (BTX-style MoE assembly needs a per-brick FFN delta).
DEFAULT_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)

SAVE_DTYPES = ("float32", "float16", "bfloat16")


class LoraTrainConfig(BaseModel):
    """How a brick is trained. The defaults finish in minutes on two CPU cores for a 135M model.

    LoRA update: ``W x + (alpha / rank) * B A x`` with ``A`` (rank, in) and ``B`` (out, rank).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(8, ge=1, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout (0 keeps training deterministic)")
    targets: tuple[str, ...] = Field(DEFAULT_TARGETS, description="module names that receive a LoRA pair")
    steps: int = Field(60, ge=1, description="optimizer steps")
    batch_size: int = Field(1, ge=1, description="sequences per step")
    seq_len: int = Field(256, ge=8, description="tokens per training sequence")
    lr: float = Field(2e-3, gt=0, description="peak learning rate (AdamW)")
    warmup: float = Field(0.1, ge=0, lt=1, description="fraction of steps with linear warm-up")
    weight_decay: float = Field(0.0, ge=0)
    seed: int = Field(0, description="seeds LoRA init and document order")
    balance_sources: bool = Field(
        False,
        description="give each of the domain's sources about the same share of the training bytes (a "
        "domain whose sources differ in document length is otherwise dominated by the long documents)",
    )
    piece_bytes: int = Field(
        0,
        ge=0,
        description="cut documents into pieces of about this many bytes (at line ends) before shuffling, "
        "so a short run sees many documents instead of the first two or three long ones (0: whole documents)",
    )
    eval_bytes: int = Field(12_000, ge=0, description="held-out bytes scored before and after (0: skip)")
    save_dtype: Annotated[str, one_of(SAVE_DTYPES, "save dtype")] = Field(
        "float16", description="storage dtype of the adapter weights"
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto: bf16 autocast over the fp32 weights where the CPU/GPU has native bf16 "
        "(lmbricks.runtime.resolve_precision), else fp32; fp32 reproduces the shipped bricks' training",
    )

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one target module is needed")
        return value

    @property
    def train_tokens(self) -> int:
        """Tokens consumed by the whole run."""
        return self.steps * self.batch_size * self.seq_len


def make_config(**fields: object) -> LoraTrainConfig:
    """Build a :class:`LoraTrainConfig`; validation errors become :class:`ConfigError` naming the field."""
    return validate(LoraTrainConfig, fields, "LoRA training config")
