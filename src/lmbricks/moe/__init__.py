"""Sparse mixture-of-experts layers: routers, balancing losses, capacity, experts, dispatch."""

from lmbricks.moe.capacity import apply_capacity, expert_capacity
from lmbricks.moe.config import MoEConfig
from lmbricks.moe.dispatch import DispatchPlan, plan_dispatch
from lmbricks.moe.experts import Experts
from lmbricks.moe.hf import load_hf_block, moe_config_from_hf, moe_fields_from_hf, moe_from_hf_block
from lmbricks.moe.layer import MoELayer, build_moe
from lmbricks.moe.losses import cv_squared, importance_loss, load_loss, switch_loss, z_loss
from lmbricks.moe.routers import (
    ROUTERS,
    DenseRouter,
    ExpertChoiceRouter,
    NoisyTopKRouter,
    Router,
    SigmoidTopKRouter,
    SoftmaxTopKRouter,
    SwitchRouter,
    build_router,
    register_router,
)
from lmbricks.moe.shared import SharedExpert
from lmbricks.moe.types import MoEAux, RouterOutput

__all__ = [
    "ROUTERS",
    "DenseRouter",
    "DispatchPlan",
    "ExpertChoiceRouter",
    "Experts",
    "MoEAux",
    "MoEConfig",
    "MoELayer",
    "NoisyTopKRouter",
    "Router",
    "RouterOutput",
    "SharedExpert",
    "SigmoidTopKRouter",
    "SoftmaxTopKRouter",
    "SwitchRouter",
    "apply_capacity",
    "build_moe",
    "build_router",
    "cv_squared",
    "expert_capacity",
    "importance_loss",
    "load_hf_block",
    "load_loss",
    "moe_config_from_hf",
    "moe_fields_from_hf",
    "moe_from_hf_block",
    "plan_dispatch",
    "register_router",
    "switch_loss",
    "z_loss",
]
