"""MoEConfig: one typed, validated description of an MoE feed-forward layer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from lmbricks.errors import ConfigError

RouterName = Literal["softmax_topk", "noisy_topk", "switch", "expert_choice", "dense", "sigmoid_topk"]
ROUTERS: tuple[str, ...] = ("softmax_topk", "noisy_topk", "switch", "expert_choice", "dense", "sigmoid_topk")
ACTIVATIONS: tuple[str, ...] = ("swiglu", "gelu", "relu")
DROP_POLICIES: tuple[str, ...] = ("position", "probability")
AUX_LOSSES: tuple[str, ...] = ("switch", "importance_load", "none")


@dataclass
class MoEConfig:
    """Shape and routing of one MoE layer. Invalid values raise ``ConfigError`` naming the field."""

    hidden_size: int  # model width H
    intermediate_size: int  # width I of each expert's FFN
    num_experts: int  # E
    top_k: int = 2  # experts per token (token-choice routers); ignored by expert_choice and dense
    router: RouterName = "softmax_topk"
    # Renormalise the top-k gates to sum to 1 (Mixtral); False keeps the softmax values (Qwen2-MoE).
    renormalize: bool = True
    # swiglu = down(silu(x Wg) * x Wu) (Llama/Mixtral experts); gelu / relu = down(act(x Wu)).
    activation: Literal["swiglu", "gelu", "relu"] = "swiglu"
    # None = dropless (every routed pair is computed); else capacity = ceil(T*k/E * capacity_factor).
    capacity_factor: float | None = None
    # Which pairs overflow an expert: "position" (earlier tokens and first choices win, Switch/GShard)
    # or "probability" (highest router weight wins, batch-prioritised routing of V-MoE).
    drop_policy: Literal["position", "probability"] = "probability"
    expert_choice_capacity: float = 1.0  # c in k = n*c/E: the mean number of experts per token
    # Multiplicative jitter on the router input in training: x * U(1 - eps, 1 + eps) (Switch).
    router_jitter: float = 0.0
    # > 0 adds a Qwen2-MoE shared expert (SwiGLU of this width) scaled by sigmoid(x w_gate).
    shared_expert_intermediate_size: int = 0
    # Aux-loss-free balancing (DeepSeek-V3): the step of SigmoidTopKRouter.update_bias; sigmoid_topk only.
    bias_update_rate: float = 0.0
    aux_loss: Literal["switch", "importance_load", "none"] = "switch"
    z_loss: bool = True  # report the ST-MoE router z-loss in MoEAux.losses["z"]

    def __post_init__(self) -> None:
        for name in ("hidden_size", "intermediate_size", "num_experts"):
            _positive_int(name, getattr(self, name))
        _positive_int("top_k", self.top_k)
        _one_of("router", self.router, ROUTERS)
        _one_of("activation", self.activation, ACTIVATIONS)
        _one_of("drop_policy", self.drop_policy, DROP_POLICIES)
        _one_of("aux_loss", self.aux_loss, AUX_LOSSES)
        if self.top_k > self.num_experts:
            raise ConfigError(f"top_k ({self.top_k}) must not exceed num_experts ({self.num_experts})")
        if self.router == "switch" and self.top_k != 1:
            raise ConfigError(f"top_k must be 1 for router='switch' (one expert per token), got {self.top_k}")
        if self.capacity_factor is not None:
            if isinstance(self.capacity_factor, bool) or not isinstance(self.capacity_factor, (int, float)):
                raise ConfigError(f"capacity_factor must be a number or None, got {self.capacity_factor!r}")
            if not self.capacity_factor > 0:
                raise ConfigError(f"capacity_factor must be > 0 (or None for dropless), got {self.capacity_factor}")
            if self.router in ("expert_choice", "dense"):
                raise ConfigError(
                    f"capacity_factor applies to token-choice routers; router={self.router!r} sets its load"
                    " (use expert_choice_capacity)"
                )
        _positive_float("expert_choice_capacity", self.expert_choice_capacity)
        if self.expert_choice_capacity > self.num_experts:
            raise ConfigError(
                f"expert_choice_capacity ({self.expert_choice_capacity}) must not exceed num_experts "
                f"({self.num_experts}): a token cannot be taken by more experts than exist"
            )
        if not 0.0 <= float(self.router_jitter) < 1.0:
            raise ConfigError(f"router_jitter must be in [0, 1), got {self.router_jitter}")
        if (
            isinstance(self.shared_expert_intermediate_size, bool)
            or not isinstance(self.shared_expert_intermediate_size, int)
            or self.shared_expert_intermediate_size < 0
        ):
            raise ConfigError(
                f"shared_expert_intermediate_size must be an integer >= 0, got {self.shared_expert_intermediate_size!r}"
            )
        if float(self.bias_update_rate) < 0:
            raise ConfigError(f"bias_update_rate must be >= 0, got {self.bias_update_rate}")
        if self.bias_update_rate > 0 and self.router != "sigmoid_topk":
            raise ConfigError(f"bias_update_rate is only used by router='sigmoid_topk', got router={self.router!r}")

    @property
    def gated(self) -> bool:
        """Whether experts have a gate projection (SwiGLU) besides the up projection."""
        return self.activation == "swiglu"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable fields."""
        return dataclasses.asdict(self)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r} (choose from {', '.join(allowed)})")
