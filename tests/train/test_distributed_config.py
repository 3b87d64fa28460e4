"""``parallel:`` in the training config: the words and the mapping, and what is refused early."""

from __future__ import annotations

from typing import Any

import pytest

from lmbricks.errors import ConfigError
from lmbricks.train.config import parse_config
from lmbricks.train.distributed import DistInfo
from lmbricks.train.parallel import make_layout

MOE = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "moe": {"num_experts": 4, "intermediate_size": 32}}


def _cfg(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model": MOE,
        "tokenizer": "lmbricks-tiny",
        "data": {"text_files": ["x.txt"]},
        "steps": 2,
        "batch_size": 4,
    }
    cfg.update(over)
    return cfg


@pytest.mark.parametrize(
    ("value", "name", "experts"),
    [
        (None, "ddp", None),
        ("ddp", "ddp", None),
        ("fsdp", "fsdp", None),
        ({"experts": 2}, "experts", 2),
        ({"global_load": True}, "ddp", None),
    ],
)
def test_parallel_forms(value: Any, name: str, experts: int | None) -> None:
    cfg = parse_config(_cfg() if value is None else _cfg(parallel=value))
    assert cfg.parallel.name == name
    assert cfg.parallel.experts == experts
    assert cfg.parallel.global_load == (isinstance(value, dict) and value.get("global_load", False))


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"parallel": "zero3"}, "not a layout"),
        ({"parallel": {"experts": 3}}, "must divide model.moe.num_experts"),
        ({"parallel": {"expert": 2}}, "did you mean 'parallel.experts'"),
        ({"parallel": {"fsdp": True, "experts": 2}}, "cannot be combined"),
        ({"parallel": {"experts": 2}, "model": {**MOE, "moe": None}}, "needs an MoE model"),
        ({"parallel": "fsdp", "averaging": {"ema_decay": 0.9}}, "averages"),
    ],
)
def test_parallel_refusals_name_the_field(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="parallel") as err:
        parse_config(_cfg(**over))
    assert message in str(err.value)


def test_expert_ranks_must_divide_the_world() -> None:
    import torch

    cfg = parse_config(_cfg(parallel={"experts": 4}))
    with pytest.raises(ConfigError, match=r"parallel.experts \(4\) must divide the number of processes \(6\)"):
        make_layout(cfg, DistInfo(rank=0, world=6, device=torch.device("cpu")))
