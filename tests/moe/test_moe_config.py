"""MoEConfig validation: bad values fail early with a ConfigError naming the field."""

from __future__ import annotations

import pytest

from lmbricks.errors import ConfigError
from lmbricks.moe import MoEConfig, build_moe

BASE = dict(hidden_size=16, intermediate_size=32, num_experts=4)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(top_k=5), "top_k"),
        (dict(top_k=0), "top_k"),
        (dict(capacity_factor=0.0), "capacity_factor"),
        (dict(capacity_factor=-1.0), "capacity_factor"),
        (dict(router="hash"), "router"),
        (dict(activation="tanh"), "activation"),
        (dict(drop_policy="random"), "drop_policy"),
        (dict(aux_loss="entropy"), "aux_loss"),
        (dict(num_experts=0), "num_experts"),
        (dict(hidden_size=-3), "hidden_size"),
        (dict(router="switch", top_k=2), "top_k"),
        (dict(router="expert_choice", expert_choice_capacity=0.0), "expert_choice_capacity"),
        (dict(router="expert_choice", capacity_factor=1.0), "capacity_factor"),
        (dict(router_jitter=1.5), "router_jitter"),
        (dict(bias_update_rate=1e-3), "bias_update_rate"),
        (dict(shared_expert_intermediate_size=-1), "shared_expert_intermediate_size"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        MoEConfig(**{**BASE, **overrides})


@pytest.mark.parametrize("router", ["softmax_topk", "noisy_topk", "expert_choice", "dense", "sigmoid_topk"])
def test_every_router_builds(router: str) -> None:
    layer = build_moe(MoEConfig(**BASE, router=router))  # type: ignore[arg-type]
    assert layer.router.name == router
    assert layer.experts.gate_up.shape == (4, 16, 64)  # (E, H, 2I)
    assert layer.experts.down.shape == (4, 32, 16)  # (E, I, H)


def test_switch_builds_with_top1_and_round_trips() -> None:
    cfg = MoEConfig(**BASE, router="switch", top_k=1, capacity_factor=1.25, drop_policy="position")
    assert MoEConfig(**cfg.to_dict()) == cfg
    assert build_moe(cfg).router.name == "switch"


def test_unknown_dispatch_impl() -> None:
    with pytest.raises(ConfigError, match="impl"):
        build_moe(MoEConfig(**BASE), impl="magic")  # type: ignore[arg-type]


def test_a_registered_router_is_selectable_from_a_config() -> None:
    """The router registry is the only list of router names: a new router needs no config change."""
    from lmbricks.moe.routers import ROUTERS, SoftmaxTopKRouter, register_router

    with pytest.raises(ConfigError, match="unknown router 'greedy_first'"):
        MoEConfig(**BASE, router="greedy_first")
    try:

        @register_router("greedy_first", reference="https://example.org/a-test-router")
        class GreedyFirst(SoftmaxTopKRouter):
            fixed_top_k = 1

        layer = build_moe(MoEConfig(**BASE, router="greedy_first", top_k=1))
        assert isinstance(layer.router, GreedyFirst) and layer.router.name == "greedy_first"
        with pytest.raises(ConfigError, match="top_k must be 1"):  # the router's own rule applies
            MoEConfig(**BASE, router="greedy_first", top_k=2)
    finally:
        ROUTERS.pop("greedy_first", None)


def test_unknown_key_suggests_the_field() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'num_expert' \(did you mean 'num_experts'\?\)"):
        MoEConfig(hidden_size=16, intermediate_size=32, num_expert=4)


def test_a_misspelt_registry_name_is_suggested() -> None:
    """config.one_of: every name checked against a registry gets the same message and suggestion."""
    with pytest.raises(ConfigError, match=r"activation: unknown activation 'gelux' \(did you mean 'gelu'\?\) \(choose"):
        MoEConfig(**BASE, activation="gelux")
    with pytest.raises(ConfigError, match=r"router: unknown router 'swich' \(did you mean 'switch'\?\)"):
        MoEConfig(**BASE, router="swich")


def test_format_errors_reads_the_keys_of_a_pydantic_dataclass() -> None:
    """LMConfig is a pydantic dataclass: format_errors suggests from its fields as from a model's."""
    from pydantic import ConfigDict, ValidationError
    from pydantic.dataclasses import dataclass

    from lmbricks.config import format_errors

    @dataclass(config=ConfigDict(extra="forbid"))
    class Inner:
        steps: int = 1

    @dataclass(config=ConfigDict(extra="forbid"))
    class Outer:
        inner: Inner

    assert Outer(inner={"steps": 3}).inner.steps == 3  # type: ignore[arg-type]
    data = {"inner": {"stepz": 2}}
    with pytest.raises(ValidationError) as caught:
        Outer(**data)  # type: ignore[arg-type]
    assert format_errors(caught.value, Outer, data) == "unknown key 'inner.stepz' (did you mean 'inner.steps'?)"
