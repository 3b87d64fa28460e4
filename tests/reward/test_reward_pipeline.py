"""The reward pipelines' pure parts: pair specs, WARM member configs and set names, the eval record."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbricks.errors import ConfigError
from lmbricks.reward import Pair, write_pairs
from lmbricks.reward.pipeline import RewardEval, WarmJob, load_pair_spec, pair_spec_files, warm_eval_sets, warm_members


def test_pair_spec_files_are_the_jsonl_parts_only() -> None:
    files = pair_spec_files("builtin:champ@validation+a.jsonl@test", "", "b.jsonl", "builtin:dialogue")
    assert files == [Path("a.jsonl"), Path("b.jsonl")]


def test_load_pair_spec_joins_parts_and_limits(tmp_path: Path) -> None:
    a = write_pairs([Pair("p", f"c{i}", f"r{i}") for i in range(3)], tmp_path / "a.jsonl")
    b = write_pairs([Pair("q", "c", "r")], tmp_path / "b.jsonl")
    pairs = load_pair_spec(f"{a}+{b}", "train", None)
    assert [p.chosen for p in pairs] == ["c0", "c1", "c2", "c"]
    assert len(load_pair_spec(f"{a}+{b}", "train", 2)) == 2
    assert len(load_pair_spec(f"{a}", "train", 0)) == 3  # 0: all


def test_warm_members_cycle_learning_rates_and_share_the_head() -> None:
    job = WarmJob.model_validate(
        {"model": "m", "data": "builtin:dialogue", "out": "o", "members": 3, "lrs": [1e-4, 3e-4]}
    )
    cfgs = warm_members(job)
    assert [c.lr for c in cfgs] == [1e-4, 3e-4, 1e-4] and [c.seed for c in cfgs] == [0, 1, 2]
    assert {c.head_seed for c in cfgs} == {0}
    with pytest.raises(ConfigError, match=r"reward warm options \(member 0\): epochs"):
        warm_members(job.model_copy(update={"epochs": 0}))


def test_warm_eval_set_names(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []

    def fake(spec: str, split: str, limit: int | None, seed: int = 0) -> list[Pair]:
        seen.append((spec, split))
        return []

    monkeypatch.setattr("lmbricks.reward.pipeline.load_pair_spec", fake)
    job = WarmJob.model_validate(
        {
            "model": "m",
            "data": "builtin:dialogue@train",
            "out": "o",
            "shift": ["builtin:champ@validation+builtin:chitchat"],
        }
    )
    assert list(warm_eval_sets(job)) == ["held_out", "champ_validation_chitchat"]
    assert seen[0] == ("builtin:dialogue@test", "test")


def test_reward_eval_record() -> None:
    res = RewardEval(pairs=4, skipped=1, correct=3, ci95=(0.3, 0.95), mean_margin=0.5)
    assert res.accuracy == 0.75
    assert res.to_dict() == {"pairs": 4, "skipped": 1, "accuracy": 0.75, "ci95": [0.3, 0.95], "mean_margin": 0.5}
    assert RewardEval(0, 0, 0, (0.0, 1.0), 0.0).accuracy == 0.0
