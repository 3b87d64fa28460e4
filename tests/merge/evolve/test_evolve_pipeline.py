"""The pipeline on a tiny family: outputs, bit-for-bit reproduction, memory == write, configs refused early."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from evolve_configs import DOMAIN, evolve_dict

from lmbricks.checkpoint import CheckpointReader
from lmbricks.config import validate
from lmbricks.errors import ConfigError, LmbricksError
from lmbricks.merge import merge
from lmbricks.merge.evolve import EvolveConfig, evolve
from lmbricks.merge.evolve.log import LOG_NAME, read_log


def _config(data: dict[str, Any]) -> EvolveConfig:
    return validate(EvolveConfig, data, "evolve.yaml", what="evolve config")


def _same_tensors(a: Path, b: Path) -> None:
    ra, rb = CheckpointReader(a), CheckpointReader(b)
    assert sorted(ra) == sorted(rb)
    for k in ra:
        ta, tb = ra.get(k), rb.get(k)
        assert ta.dtype == tb.dtype and ta.shape == tb.shape
        assert ta.reshape(-1).view(torch.uint8).equal(tb.reshape(-1).view(torch.uint8)), k


@pytest.mark.usefixtures("home")
def test_evolve_writes_a_reproducible_best_recipe(family: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(evolve_dict(family, tmp_path / "scratch", evaluations=8))
    result = evolve(cfg, tmp_path / "out")
    out = tmp_path / "out"
    for name in ("best.yaml", "model/config.json", LOG_NAME, "summary.json", "fitness.png", "lmbricks.json"):
        assert (out / name).is_file(), name
    assert result.evaluations == 8 and result.resumed == 0
    records = read_log(out / LOG_NAME, json.loads((out / LOG_NAME).read_text().splitlines()[0])["config_hash"])
    assert min(r.loss for r in records) == result.best.loss
    # the searched score is the validation split's; the evolved recipe scores it again identically
    assert result.validation["evolved"]["loss"] == result.best.loss
    assert result.validation["evolved"]["bpb"][DOMAIN] == result.best.bpb[DOMAIN]
    assert set(result.test) == {"evolved", "start", "w=1 d=0.5", "base model"}
    assert result.test["evolved"]["bpb"][DOMAIN] != result.validation["evolved"]["bpb"][DOMAIN]
    # `lmbricks merge best.yaml` reproduces the written model bit for bit
    merge(out / "best.yaml", tmp_path / "again")
    _same_tensors(out / "model", tmp_path / "again")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timings"]["evaluations_per_hour"] > 0 and 0 < summary["timings"]["merge_share"] < 1
    assert summary["dimensions"][0] == "models[0].weight"


@pytest.mark.usefixtures("home")
def test_memory_and_write_modes_score_the_same_candidates_identically(family: dict[str, Path], tmp_path: Path) -> None:
    losses = {}
    for mode in ("memory", "write"):
        cfg = _config(evolve_dict(family, tmp_path / f"scratch-{mode}", evaluations=4, mode=mode, baselines=[]))
        evolve(cfg, tmp_path / f"out-{mode}")
        text = (tmp_path / f"out-{mode}" / LOG_NAME).read_text().splitlines()
        losses[mode] = [(json.loads(line)["unit"], json.loads(line)["loss"]) for line in text[1:]]
    assert losses["memory"] == losses["write"]
    _same_tensors(tmp_path / "out-memory" / "model", tmp_path / "out-write" / "model")


@pytest.mark.usefixtures("home")
def test_a_finished_search_resumes_without_new_candidates(family: dict[str, Path], tmp_path: Path) -> None:
    data = evolve_dict(family, tmp_path / "scratch", evaluations=3, baselines=[])
    first = evolve(_config(data), tmp_path / "out1")
    again = evolve(_config({**data, "budget": {"evaluations": 5}}), tmp_path / "out2")
    assert again.resumed == 3 and again.evaluations == 5
    assert again.best.loss <= first.best.loss


@pytest.mark.usefixtures("home")
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"fitnes": {}}, "unknown key 'fitnes'"),
        ({"free": [{"parameter": "weight", "low": 1.0, "high": 0.5}]}, r"low \(1.0\) must be below high"),
        ({"optimizer": {"name": "CMAES"}}, "unknown optimizer 'CMAES'"),
        ({"fitness": {"bpb": {"no_such_domain": 1.0}}}, "no_such_domain"),
        ({"fitness": {"bpb": {}}}, "give fitness.bpb"),
        ({"free": [{"parameter": "density", "low": -0.5, "high": 1.0}]}, "at its low bound"),
        ({"free": [{"parameter": "normalize", "low": 0, "high": 1}]}, r"free\[0\]\.parameter: 'normalize'"),
        ({"baselines": [{"name": "x", "set": {"lambda": 1.0}}]}, r"baselines\[0\]\.set\.lambda: not a free parameter"),
        ({"budget": {"evaluations": 0}}, "budget.evaluations"),
        ({"recipe": {"merge_method": "ties", "models": []}}, "exactly one of 'models' or 'slices'"),
    ],
)
def test_bad_configs_are_refused_before_any_work(
    family: dict[str, Path], tmp_path: Path, change: dict[str, Any], match: str
) -> None:
    with pytest.raises(LmbricksError, match=match):
        evolve(_config({**evolve_dict(family, tmp_path / "scratch"), **change}), tmp_path / "out")
    assert not (tmp_path / "scratch").exists() and not (tmp_path / "out").exists()


@pytest.mark.usefixtures("home")
def test_the_output_is_never_an_input(family: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        evolve(_config(evolve_dict(family, tmp_path / "scratch")), family["ft1"] / "sub")
    with pytest.raises(ConfigError):
        evolve(_config(evolve_dict(family, family["ft2"] / "scratch")), tmp_path / "out")
    assert not (family["ft2"] / "scratch").exists()
