"""MoEConfig: one typed, validated description of an MoE feed-forward layer.

A pydantic model (unknown keys refused with a "did you mean", one error format: see
:mod:`lmbricks.config`). The router and the activation are names in their registries
(:data:`lmbricks.moe.routers.ROUTERS`, :data:`lmbricks.moe.activations.ACTIVATIONS`), so a router
added with ``register_router`` is selectable here; the router's class says which options apply to it
(``token_choice``, ``fixed_top_k``, ``balances_by_bias``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmbricks.config import format_errors, one_of
from lmbricks.errors import ConfigError
from lmbricks.moe.activations import ACTIVATIONS
from lmbricks.moe.routers import ROUTERS


class MoEConfig(BaseModel):
    """Shape and routing of one MoE layer. Invalid values raise ``ConfigError`` naming the field."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(ge=1, strict=True)  # model width H
    intermediate_size: int = Field(ge=1, strict=True)  # width I of each expert's FFN
    num_experts: int = Field(ge=1, strict=True)  # E
    top_k: int = Field(2, ge=1, strict=True)  # experts per token (token-choice routers); ignored by others
    router: Annotated[str, one_of(ROUTERS, "router")] = "softmax_topk"  # a name in lmbricks.moe.routers.ROUTERS
    # Renormalise the top-k gates to sum to 1 (Mixtral); False keeps the softmax values (Qwen2-MoE).
    renormalize: bool = True
    # swiglu = down(silu(x Wg) * x Wu) (Llama/Mixtral experts); gelu / relu = down(act(x Wu)).
    activation: Annotated[str, one_of(ACTIVATIONS, "activation")] = "swiglu"  # lmbricks.moe.activations.ACTIVATIONS
    # None = dropless (every routed pair is computed); else capacity = ceil(T*k/E * capacity_factor).
    capacity_factor: float | None = Field(None, gt=0)
    # Which pairs overflow an expert: "position" (earlier tokens and first choices win, Switch/GShard)
    # or "probability" (highest router weight wins, batch-prioritised routing of V-MoE).
    drop_policy: Literal["position", "probability"] = "probability"
    expert_choice_capacity: float = Field(1.0, gt=0)  # c in k = n*c/E: the mean number of experts per token
    # Multiplicative jitter on the router input in training: x * U(1 - eps, 1 + eps) (Switch).
    router_jitter: float = Field(0.0, ge=0, lt=1)
    # > 0 adds a Qwen2-MoE shared expert (SwiGLU of this width) scaled by sigmoid(x w_gate).
    shared_expert_intermediate_size: int = Field(0, ge=0, strict=True)
    # Aux-loss-free balancing (DeepSeek-V3): the step of SigmoidTopKRouter.update_bias; such routers only.
    bias_update_rate: float = Field(0.0, ge=0)
    aux_loss: Literal["switch", "importance_load", "none"] = "switch"
    z_loss: bool = True  # report the ST-MoE router z-loss in MoEAux.losses["z"]

    def __init__(self, **data: Any) -> None:
        """Validate the fields; a failure is one ConfigError (``field: reason (got value)``)."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, MoEConfig, data)) from None

    @model_validator(mode="after")
    def _consistent(self) -> MoEConfig:
        router = ROUTERS[self.router].cls
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k ({self.top_k}) must not exceed num_experts ({self.num_experts})")
        if router.fixed_top_k is not None and self.top_k != router.fixed_top_k:
            raise ValueError(f"top_k must be {router.fixed_top_k} for router={self.router!r}, got {self.top_k}")
        if self.capacity_factor is not None and not router.token_choice:
            raise ValueError(
                f"capacity_factor applies to token-choice routers; router={self.router!r} sets its load"
                " (use expert_choice_capacity)"
            )
        if self.expert_choice_capacity > self.num_experts:
            raise ValueError(
                f"expert_choice_capacity ({self.expert_choice_capacity}) must not exceed num_experts "
                f"({self.num_experts}): a token cannot be taken by more experts than exist"
            )
        if self.bias_update_rate > 0 and not router.balances_by_bias:
            raise ValueError(f"bias_update_rate is only used by bias-balanced routers, got router={self.router!r}")
        return self

    @property
    def gated(self) -> bool:
        """Whether experts have a gate projection (SwiGLU) besides the up projection."""
        return ACTIVATIONS[self.activation].gated

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable fields."""
        return self.model_dump()
