"""The MoEfication configuration: validated before any work, each error naming its field."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lmbricks.config import suggest
from lmbricks.errors import ConfigError
from lmbricks.moefy.routers import MOEFY_ROUTERS

Split = Literal["kmeans", "coactivation", "random"]
SPLITS: tuple[str, ...] = ("kmeans", "coactivation", "random")
#: model_type values whose FFN is a gated (SwiGLU / GeGLU) ``gate_proj/up_proj/down_proj`` block.
DENSE_GLU_TYPES: tuple[str, ...] = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")


class MoefyConfig(BaseModel):
    """How a dense model is cut into experts.

    Attributes:
        experts: experts per FFN (E, shared ones included); must divide the intermediate width.
        top_k: routed experts used per token (K <= E - S); the router's default. A token uses
            ``(S + K) * n`` neurons (n = I / E).
        shared_experts: S experts always on (after CMoE, arXiv 2502.04416): the ``S * n`` neurons
            most often among a token's ``(S + K) * n`` largest ``|activation|`` on the calibration
            tokens; the other neurons are split and routed as ``E - S`` experts. 0: none (every
            expert routed, the behaviour before this field).
        split: ``kmeans`` (balanced k-means on L2-normalised gate rows), ``coactivation`` (balanced
            k-means on the neurons' activation patterns over the calibration corpus) or ``random``.
        router: a name in :data:`~lmbricks.moefy.routers.MOEFY_ROUTERS`: ``centroid`` (no
            training), ``linear`` (ridge regression of the experts' log output norms, closed form)
            or ``mlp`` (trained per layer on the calibration corpus).
        router_hidden: hidden width of the MLP router.
        router_steps: Adam steps per layer for the MLP router.
        router_lr: its learning rate.
        router_ridge: the linear router's ridge penalty (relative to the Gram matrix's mean diagonal).
        router_objective: ``soft`` (cross-entropy to each token's distribution of expert output
            norms) or ``bce`` (binary labels: the top ``label_k`` experts, the reference code's).
        label_k: experts labelled positive in the router's BCE targets (None: ``top_k``).
        dynamic_threshold: if set, per token the fewest experts whose predicted mass share reaches it.
        kmeans_iters: iterations of balanced k-means.
        refine_iters: alternations of :func:`~lmbricks.moefy.cluster.refine_partition` after the
            co-activation k-means (0: plain k-means).
        calib_chunks: calibration blocks per domain (train split).
        calib_seq_len: tokens per calibration block.
        seed: seed for k-means initialisation, random splits and router training.
    """

    model_config = ConfigDict(extra="forbid")

    experts: int = Field(32, ge=1)
    top_k: int = Field(16, ge=1)
    shared_experts: int = Field(0, ge=0)
    split: Split = "coactivation"
    router: str = "linear"
    router_hidden: int = Field(256, ge=1)
    router_steps: int = Field(400, ge=0)
    router_lr: float = Field(3e-3, gt=0)
    router_ridge: float = Field(0.1, ge=0)
    router_objective: Literal["soft", "bce"] = "soft"
    label_k: int | None = Field(None, ge=1)
    dynamic_threshold: float | None = Field(None, gt=0, le=1)
    kmeans_iters: int = Field(30, ge=1)
    refine_iters: int = Field(10, ge=0)
    calib_chunks: int = Field(8, ge=1)
    calib_seq_len: int = Field(512, ge=2)
    seed: int = 0

    @field_validator("router")
    @classmethod
    def _known_router(cls, name: str) -> str:
        if name not in MOEFY_ROUTERS:
            known = list(MOEFY_ROUTERS)
            raise ValueError(f"unknown router {name!r}{suggest(name, known)} (choose from {', '.join(known)})")
        return name

    @model_validator(mode="after")
    def _k_le_e(self) -> MoefyConfig:
        if self.shared_experts >= self.experts:
            raise ValueError(f"shared_experts ({self.shared_experts}) must be < experts ({self.experts})")
        routed = self.experts - self.shared_experts
        what = f"the routed experts ({routed} = experts - shared_experts)" if self.shared_experts else "experts"
        if self.top_k > routed:
            raise ValueError(f"top_k ({self.top_k}) must be <= {what} ({routed})")
        if self.label_k is not None and self.label_k > routed:
            raise ValueError(f"label_k ({self.label_k}) must be <= {what} ({routed})")
        return self

    def routed(self) -> MoefyConfig:
        """The settings of the routed part alone: ``E - S`` experts, none shared (what its router is fitted with)."""
        if not self.shared_experts:
            return self
        return self.model_copy(update={"experts": self.experts - self.shared_experts, "shared_experts": 0})

    def check_width(self, width: int, where: str = "the FFN") -> int:
        """Neurons per expert for an FFN of ``width`` neurons (ConfigError if E does not divide it)."""
        if width % self.experts:
            raise ConfigError(
                f"experts={self.experts} does not divide the intermediate width {width} of {where}; "
                f"choose a divisor of {width}"
            )
        return width // self.experts


def make_config(**fields: object) -> MoefyConfig:
    """Build a :class:`MoefyConfig`; errors become one ConfigError naming the field and value."""
    from lmbricks.config import validate

    return validate(MoefyConfig, fields, "moefy settings", what="moefy config")
