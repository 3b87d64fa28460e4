"""A merge recipe's ``model+adapter`` obeys the same base rule as every brick command: identity, not shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.adapters.conftest import make_brick

from lmbricks.checkpoint import CheckpointReader
from lmbricks.errors import ConfigError
from lmbricks.merge import merge


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))


def _recipe(model: Path, adapter: Path) -> dict:
    return {"merge_method": "passthrough", "models": [{"model": f"{model}+{adapter}"}], "dtype": "float32"}


def test_adapter_on_its_own_base_merges(family: dict[str, Path], tmp_path: Path) -> None:
    brick = make_brick(family["base"], tmp_path / "brick", seed=3)
    out = merge(_recipe(family["base"], brick), tmp_path / "out")
    with CheckpointReader(out) as merged, CheckpointReader(family["base"]) as base:
        changed = [k for k in base if not torch.equal(merged.get(k), base.get(k))]
    assert changed and all(k.endswith(("proj.weight",)) for k in changed)


def test_adapter_on_another_base_of_equal_shapes_is_refused(family: dict[str, Path], tmp_path: Path) -> None:
    # ft1 has exactly the base's shapes; only its weights differ, which the shape check cannot see.
    brick = make_brick(family["base"], tmp_path / "brick", seed=3)
    with pytest.raises(ConfigError, match=r"adapter .* was trained on base .* they differ in weights"):
        merge(_recipe(family["ft1"], brick), tmp_path / "out")
    assert not (tmp_path / "out").exists()
