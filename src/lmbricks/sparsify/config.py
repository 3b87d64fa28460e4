"""The ReLU-fication configuration: validated before any work, each error naming its field."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lmbricks.errors import ConfigError


class RelufyConfig(BaseModel):
    """How a dense SwiGLU model is ReLU-fied (ProSparse: swap, L1-penalised training, threshold shift).

    Attributes:
        model: the source (HF directory or registry name); never modified.
        out: the output HF directory.
        run_dir: the training run directory (checkpoints, logs; resumable); default beside ``out``.
        domains: lmbricks.data corpora trained and evaluated on.
        text_files: local UTF-8 files to train on instead of ``domains`` (the curve reads their start).
        tokens: training budget in tokens (steps = tokens // (batch_size * seq_len)); 0: no training.
        minutes: stop training after this many wall-clock minutes (checkpointed; resume continues).
        batch_size: sequences per optimizer step.
        seq_len: tokens per training sequence.
        lr: AdamW learning rate (constant after warm-up).
        warmup_steps: linear learning-rate warm-up.
        l1_factor: the final factor of the L1 penalty on mean |relu(gate)|.
        l1_increase_steps: steps over which the factor rises (ProSparse's progressive increase).
        threshold: FATReLU threshold T applied at the end (0: plain ReLU).
        target_sparsity: instead of ``threshold``, choose T on calibration text for this zero fraction.
        eval_every: steps between recovery-curve points (bits per byte and zero fraction per domain).
        eval_tokens: tokens per domain in each curve point.
        checkpoint_every: steps between checkpoints.
        precision: bf16 autocast (auto: where the CPU supports it) or fp32.
        threads: torch intra-op threads.
        seed: data order and initialisation seed.
        resume: continue the run in ``run_dir``.
        force: replace an existing ``out`` (one lmbricks wrote) and restart ``run_dir``.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    out: Path
    run_dir: Path | None = None
    domains: list[str] = Field(default_factory=lambda: ["en_prose", "code", "math", "zh", "dialogue"])
    text_files: list[Path] = Field(default_factory=list)
    tokens: int = Field(200_000, ge=0)
    minutes: float | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    seq_len: int = Field(256, gt=1)
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(10, ge=0)
    l1_factor: float = Field(1e-2, ge=0)
    l1_increase_steps: int = Field(50, ge=0)
    threshold: float = Field(0.0, ge=0)
    target_sparsity: float | None = Field(None, gt=0, lt=1)
    eval_every: int = Field(25, gt=0)
    eval_tokens: int = Field(2048, gt=0)
    checkpoint_every: int = Field(25, gt=0)
    precision: str = Field("auto", pattern="^(auto|fp32|bf16)$")
    threads: int | None = Field(None, gt=0)
    seed: int = 0
    resume: bool = False
    force: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> RelufyConfig:
        if self.threshold and self.target_sparsity is not None:
            raise ConfigError("give threshold or target_sparsity, not both")
        if not self.domains and not self.text_files:
            raise ConfigError("domains: give at least one domain (or text_files)")
        return self

    @property
    def steps(self) -> int:
        """Optimizer steps of the token budget."""
        return self.tokens // (self.batch_size * self.seq_len)

    @property
    def work_dir(self) -> Path:
        """The training run directory: ``run_dir``, or ``.<out name>.relufy-run`` beside ``out``."""
        return self.run_dir or self.out.with_name(f".{self.out.name}.relufy-run")
