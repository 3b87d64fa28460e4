"""The training configuration (the YAML given to ``lmbricks train``), validated by pydantic.

Every section forbids unknown keys, so a typo fails before any work naming the field
(``train.optim.lr: ...``). Example::

    model: {hidden_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 2,
            moe: {num_experts: 4, top_k: 2, intermediate_size: 128}}
    tokenizer: smollm2-135m-instruct          # or init_from: a checkpoint (its tokenizer is used)
    data: {domains: [en_prose, code], seq_len: 128, max_tokens: 200000}
    steps: 200
    batch_size: 16                            # sequences per optimizer step, over all processes
    optim: {lr: 3.0e-3, weight_decay: 0.1}
    schedule: {kind: wsd, warmup_steps: 20, decay_fraction: 0.2}

``task: sft`` trains on chats instead (an ``sft:`` section replaces ``data:``; see
:mod:`lmbricks.sft.config`): response-only loss, packed examples that never attend to each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lmbricks.config import load, validate
from lmbricks.sft.config import SFTConfig
from lmbricks.train.lora import LoraSection


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """Where the training tokens come from; they are tokenised with the model's tokenizer and packed."""

    domains: list[str] = Field(default_factory=list, description="lmbricks.data domains (en_prose, code, ...)")
    text_files: list[Path] = Field(default_factory=list, description="local UTF-8 files, one document each")
    split: str = "train"
    seq_len: int = Field(128, gt=1, description="tokens per packed training sequence")
    max_tokens: int | None = Field(None, gt=0, description="cap on tokens taken per domain / file set")

    @model_validator(mode="after")
    def _some_source(self) -> DataConfig:
        if not self.domains and not self.text_files:
            raise ValueError("give data.domains or data.text_files")
        return self


class OptimConfig(_Strict):
    """AdamW; weight decay applies to matrices only (not norms, biases or embeddings' gains)."""

    lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float | None = Field(1.0, gt=0, description="max global gradient norm; null disables")


class ScheduleConfig(_Strict):
    """Learning-rate multiplier over steps: linear warmup, then cosine, WSD or constant."""

    kind: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: share of steps spent decaying")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a fraction of optim.lr")


class AveragingConfig(_Strict):
    """Weight averaging during training (lmbricks.average): EMA, SWA, and LAWA over checkpoints."""

    ema_decay: float | None = Field(None, gt=0, lt=1, description="keep an EMA of the weights")
    swa_start: int | None = Field(None, ge=0, description="step from which a uniform SWA average is kept")
    lawa_k: int | None = Field(None, ge=2, description="at the end, average the last k checkpoints (LAWA)")


class MoELossConfig(_Strict):
    """Coefficients of the MoE auxiliary losses (averaged over MoE layers, added to the LM loss)."""

    aux_loss_coef: float = Field(1e-2, ge=0, description="load-balancing loss (Switch: alpha)")
    z_loss_coef: float = Field(1e-3, ge=0, description="router z-loss (ST-MoE)")


class ParallelConfig(_Strict):
    """How the processes of a ``torchrun`` launch share the work (docs/distributed.md).

    In YAML: ``parallel: ddp`` (the default: every process holds the whole model), ``parallel: fsdp``
    (FSDP2: parameters, gradients and AdamW state sharded over the processes) or
    ``parallel: {experts: R}`` (expert parallelism: each of R ranks holds num_experts / R experts of
    every MoE layer, data parallel over the world / R groups of R ranks). ``global_load: true``
    (with any layout) balances the Switch loss on the load of all ranks' tokens.
    """

    fsdp: bool = Field(False, description="shard parameters, gradients and optimizer state (FSDP2)")
    experts: int | None = Field(None, ge=1, description="expert-parallel ranks R (num_experts / R experts each)")
    global_load: bool = Field(
        False, description="Switch loss: the load f over the micro-batches all ranks run together (else each rank's)"
    )

    @property
    def name(self) -> str:
        return "fsdp" if self.fsdp else "experts" if self.experts else "ddp"


def _parallel_from_yaml(v: Any) -> Any:
    """``ddp`` / ``fsdp`` as words, or a mapping."""
    if v in ("ddp", None):
        return {}
    if v == "fsdp":
        return {"fsdp": True}
    if isinstance(v, str):
        raise ValueError(f"{v!r} is not a layout (ddp, fsdp, or {{experts: R}})")
    return v


class TrainConfig(_Strict):
    """A whole training run."""

    model: dict[str, Any] | None = Field(None, description="lmbricks.nn.LMConfig fields (fresh init)")
    init_from: str | None = Field(None, description="start from this checkpoint (HF dir or registry name)")
    tokenizer: str | None = Field(None, description="tokenizer reference; default: init_from's")
    task: Literal["lm", "sft"] = Field("lm", description="lm: next-token on text; sft: instruction tuning")
    data: DataConfig | None = Field(None, description="task lm: the training text")
    sft: SFTConfig | None = Field(None, description="task sft: chats, masking, frozen parameters")
    lora: LoraSection | None = Field(None, description="train a LoRA brick (PEFT) instead of the weights")
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0, description="sequences per optimizer step over all processes")
    micro_batch_size: int | None = Field(None, gt=0, description="sequences per forward; default batch_size")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig.model_validate({}))
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig.model_validate({}))
    moe_loss: MoELossConfig = Field(default_factory=lambda: MoELossConfig.model_validate({}))
    trainable: list[Literal["routers", "experts", "non_expert"]] | None = Field(
        None, description="task lm: train only these parameter kinds (MoE router training: [routers]); default all"
    )
    averaging: AveragingConfig = Field(default_factory=lambda: AveragingConfig.model_validate({}))
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast (fp32 master weights) where the device has native bf16, else fp32"
    )
    checkpoint_every: int = Field(100, gt=0)
    keep_checkpoints: int = Field(3, ge=1, description="older step-* directories are deleted")
    log_every: int = Field(1, gt=0)
    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    threads: int | None = Field(None, gt=0, description="torch intra-op threads (CPU)")
    parallel: ParallelConfig = Field(
        default_factory=lambda: ParallelConfig.model_validate({}), description="ddp | fsdp | {experts: R}"
    )

    @field_validator("parallel", mode="before")
    @classmethod
    def _parallel_words(cls, v: Any) -> Any:
        return _parallel_from_yaml(v)

    @field_validator("model")
    @classmethod
    def _model_keys(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        """Unknown LMConfig keys fail with the file, before the tokenizer is even loaded."""
        if v is not None:
            import dataclasses

            from lmbricks.config import suggest
            from lmbricks.nn.config import LMConfig

            known = {f.name for f in dataclasses.fields(LMConfig)}
            for key in v:
                if key not in known:
                    raise ValueError(f"unknown model config key {key!r}{suggest(str(key), known)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.task == "lm" and self.data is None:
            raise ValueError("task lm needs a data section")
        if self.task == "sft" and self.sft is None:
            raise ValueError("task sft needs an sft section")
        if (self.model is None) == (self.init_from is None):
            raise ValueError("give exactly one of model (fresh init) or init_from (a checkpoint)")
        if self.init_from is None and self.tokenizer is None:
            raise ValueError("tokenizer is required when training from scratch")
        if self.lora is not None and self.init_from is None:
            raise ValueError("lora trains a brick on a base model: give init_from")
        if self.lora is not None and (self.averaging.ema_decay or self.averaging.swa_start is not None):
            raise ValueError("lora: online averaging (ema_decay, swa_start) is not supported with a LoRA brick")
        if self.trainable is not None:
            if not self.trainable:
                raise ValueError("trainable: name at least one of routers, experts, non_expert (or leave it out)")
            if self.task != "lm":
                raise ValueError("trainable applies to task lm (task sft uses sft.freeze)")
            if getattr(self, "lora", None) is not None:
                raise ValueError("trainable cannot be combined with lora (a LoRA brick trains only its factors)")
        self._check_parallel()
        mb = self.micro_batch_size or self.batch_size
        if self.batch_size % mb:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size ({mb})")
        if self.averaging.lawa_k is not None and self.keep_checkpoints < self.averaging.lawa_k:
            self.keep_checkpoints = self.averaging.lawa_k
        return self

    def _check_parallel(self) -> None:
        """What a sharded layout cannot do yet, refused before any work."""
        par = self.parallel
        if par.fsdp and par.experts:
            raise ValueError("parallel: fsdp and experts cannot be combined (choose one)")
        if par.name == "ddp":
            return
        if self.lora is not None or self.task == "sft":
            raise ValueError(f"parallel: {par.name} trains task lm without lora (use ddp for lora / sft)")
        if self.averaging.ema_decay or self.averaging.swa_start is not None or self.averaging.lawa_k:
            raise ValueError(f"parallel: {par.name} does not keep weight averages (averaging needs ddp)")
        if par.experts and self.model is not None:  # (init_from: checked when the model is sharded)
            moe = self.model.get("moe")
            n = moe.get("num_experts") if isinstance(moe, dict) else None
            if n is None:
                raise ValueError("parallel.experts needs an MoE model (model.moe)")
            if isinstance(n, int) and n % par.experts:
                raise ValueError(f"parallel.experts ({par.experts}) must divide model.moe.num_experts ({n})")

    @property
    def micro(self) -> int:
        return self.micro_batch_size or self.batch_size


def parse_config(data: Any, source: str = "config") -> TrainConfig:
    """Validate a mapping into a TrainConfig.

    Raises:
        ConfigError: naming the key, e.g. ``train.yaml: unknown key 'stepz' (did you mean 'steps'?)``.
    """
    return validate(TrainConfig, data, source, what="training config")


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training YAML file (see :func:`parse_config`)."""
    return load(TrainConfig, path, what="training config")
