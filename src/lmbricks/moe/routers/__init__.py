"""Routers, one class per file, registered by name for ``MoEConfig.router``."""

from lmbricks.moe.routers.base import ROUTERS, Router, RouterEntry, build_router, register_router
from lmbricks.moe.routers.dense import DenseRouter
from lmbricks.moe.routers.expert_choice import ExpertChoiceRouter, expert_choice_capacity
from lmbricks.moe.routers.noisy_topk import NoisyTopKRouter
from lmbricks.moe.routers.sigmoid_topk import SigmoidTopKRouter
from lmbricks.moe.routers.softmax_topk import SoftmaxTopKRouter
from lmbricks.moe.routers.switch import SwitchRouter

__all__ = [
    "ROUTERS",
    "DenseRouter",
    "ExpertChoiceRouter",
    "NoisyTopKRouter",
    "Router",
    "RouterEntry",
    "SigmoidTopKRouter",
    "SoftmaxTopKRouter",
    "SwitchRouter",
    "build_router",
    "expert_choice_capacity",
    "register_router",
]
