"""The MoEfication pipeline end to end on the tiny Llama: convert, heal, save, evaluate, densify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmbricks.errors import ConfigError
from lmbricks.moefy import is_moefied
from lmbricks.moefy.pipeline import MoefyRun, curve_ks, run_moefy

SETTINGS = {"experts": 4, "top_k": 2, "split": "random", "router": "linear", "calib_chunks": 1, "calib_seq_len": 32}


def test_run_moefy_heals_saves_evaluates_and_densifies(tiny_llama: Path, tmp_path: Path, fake_texts) -> None:
    out = tmp_path / "moe"
    run = MoefyRun.of(model=str(tiny_llama), out=out, moefy=SETTINGS, heal_tokens=128, evaluate=True, quick=True)
    steps: list[str] = []
    outcome = run_moefy(run, on_step=steps.append, texts_of=fake_texts)
    assert outcome.path == out.absolute() and is_moefied(out)
    assert outcome.healed is not None and outcome.healed.tokens >= 128
    assert outcome.oracle_share is not None and 0 < outcome.oracle_share <= 1
    assert outcome.evaluation is not None
    assert {p.mode for p in outcome.evaluation.points} == {"oracle", "router", "dynamic 0.7", "dynamic 0.9"}
    assert outcome.report == tmp_path / "moe-report" / "report.html" and outcome.report.exists()
    assert "timing" in steps and "ffn_prefill_dense_ms" in outcome.evaluation.timings
    dense = run_moefy(MoefyRun.of(model=str(out), out=tmp_path / "dense", densify=True))
    assert dense.info is None and json.loads((dense.path / "config.json").read_text()).get("lmbricks") is None


def test_run_config_is_checked_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"moefy\.split"):
        MoefyRun.of(model="x", out=tmp_path / "o", moefy={"split": "metis"})
    with pytest.raises(ConfigError, match="apart"):
        MoefyRun.of(model="x", out=tmp_path / "o", evaluate=True, report=tmp_path / "o" / "r")
    with pytest.raises(ConfigError, match="heal_minute"):
        MoefyRun.of(model="x", out=tmp_path / "o", heal_minute=1)


def test_curve_ks_stop_below_the_dense_model() -> None:
    assert curve_ks(MoefyRun.of(model="x", out=Path("o"), moefy={"experts": 32, "top_k": 12}).moefy) == [
        4,
        8,
        12,
        16,
        24,
    ]
    assert curve_ks(MoefyRun.of(model="x", out=Path("o"), moefy={"experts": 1, "top_k": 1}).moefy) == [1]
