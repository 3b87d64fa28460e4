"""The search space: parameters -> recipe -> parameters is the identity, and the planner sees the values."""

from __future__ import annotations

from pathlib import Path

import pytest
from evolve_configs import ties_recipe

from lmbricks.errors import ConfigError
from lmbricks.merge.evolve.config import FreeParam
from lmbricks.merge.evolve.space import dimensions, from_recipe, from_unit, to_recipe, to_unit
from lmbricks.merge.plan import plan_merge
from lmbricks.merge.recipe import parse_recipe

FREE = [
    FreeParam(parameter="weight", low=0.0, high=2.0),
    FreeParam(parameter="density", low=0.1, high=1.0, layers=[(0, 1), (1, 4)]),
]


def test_round_trip_and_planned_values(family: dict[str, Path]) -> None:
    recipe = parse_recipe(ties_recipe(family))
    dims = dimensions(recipe, FREE, n_layers=4)
    assert [d.name for d in dims] == [
        "models[0].weight",
        "models[1].weight",
        "models[0].density@layers[0:1)",
        "models[0].density@layers[1:4)",
        "models[1].density@layers[0:1)",
        "models[1].density@layers[1:4)",
    ]
    values = [0.25, 1.75, 0.3, 0.9, 0.45, 0.6]
    evolved = to_recipe(recipe, dims, values)
    assert from_recipe(evolved, dims) == values
    # the written recipe survives YAML-like serialisation and parsing unchanged
    assert from_recipe(parse_recipe(evolved.to_dict()), dims) == values
    assert from_unit(dims, to_unit(dims, values)) == pytest.approx(values, abs=1e-15)
    plan = plan_merge(evolved)
    by_name = {tp.name: tp for tp in plan.tensors}
    layer0 = by_name["model.layers.0.mlp.down_proj.weight"].kwargs
    layer3 = by_name["model.layers.3.self_attn.q_proj.weight"].kwargs
    assert layer0["weight"] == [0.25, 1.75] and layer3["weight"] == [0.25, 1.75]
    assert layer0["density"] == [0.3, 0.45]
    assert layer3["density"] == [0.9, 0.6]
    # tensors outside every group take the first group's value
    assert by_name["model.embed_tokens.weight"].kwargs["density"] == [0.3, 0.45]


def test_start_values_come_from_the_recipe(family: dict[str, Path]) -> None:
    recipe = parse_recipe(ties_recipe(family, weight=0.8, density=0.4))
    dims = dimensions(recipe, FREE, n_layers=4)
    assert from_recipe(recipe, dims) == [0.8, 0.8, 0.4, 0.4, 0.4, 0.4]


@pytest.mark.parametrize(
    ("free", "match"),
    [
        ([FreeParam(parameter="lambda", low=0, high=1)], r"free\[0\]\.parameter: 'lambda' is not a per-model"),
        ([FreeParam(parameter="weight", low=0, high=1, models=[5])], r"free\[0\]\.models: index 5 is out of range"),
        ([FreeParam(parameter="density", low=0, high=1, layers=[(2, 9)])], r"free\[0\]\.layers: group \[2, 9\)"),
        ([FreeParam(parameter="weight", low=0.6, high=1)], r"starting value 0.5 lies outside"),
        (
            [FreeParam(parameter="weight", low=0, high=1), FreeParam(parameter="weight", low=0, high=1, models=[1])],
            r"free\[1\]: models\[1\]\.weight is already searched by free\[0\]",
        ),
    ],
)
def test_bad_spaces_are_refused(family: dict[str, Path], free: list[FreeParam], match: str) -> None:
    recipe = parse_recipe(ties_recipe(family))
    with pytest.raises(ConfigError, match=match):
        from_recipe(recipe, dimensions(recipe, free, n_layers=4))


def test_fitness_is_the_weighted_mean_bpb_minus_the_weighted_accuracy() -> None:
    from lmbricks.merge.evolve.config import FitnessConfig
    from lmbricks.merge.evolve.fitness import combine

    cfg = FitnessConfig.model_validate({"bpb": {"a": 1.0, "b": 3.0}, "fewshot": {"n": 5, "weight": 0.5}})
    assert combine(cfg, {"a": 2.0, "b": 1.0}, 0.4) == pytest.approx((2.0 + 3.0) / 4 - 0.2)
    assert combine(FitnessConfig.model_validate({"bpb": {"a": 2.0}}), {"a": 0.7}, None) == pytest.approx(0.7)
