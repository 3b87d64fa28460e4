"""bench/teal_decode.py: its arms, the bytes a step reads, the summary's keys, the thresholds it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from teal_decode import PAPER_SPEEDUP, arm_session, measure, read_thresholds, step_bytes, summarise

from lmbricks.nn.load import load_model
from lmbricks.sparsify.teal import Teal, calibrate_teal
from lmbricks.sparsify.teal_decode import TealDecode, transposed_weights


def _ids(t: int) -> torch.Tensor:
    return torch.randint(3, 384, (1, t), generator=torch.Generator().manual_seed(0))  # (1, T)


@pytest.fixture(scope="module")
def tiny(tiny_llama: Path) -> tuple[torch.nn.Module, dict[str, list[float]]]:
    model, _ = load_model(tiny_llama, dtype=torch.bfloat16, hf_fallback=False)
    with torch.no_grad():
        thresholds = {f"keep={k:g}": calibrate_teal(model, _ids(48), 1 - k) for k in (0.6, 0.5)}
    return model.eval(), thresholds


def test_the_arms_are_the_model_teals_masks_and_its_kernel(tiny: tuple[torch.nn.Module, dict]) -> None:
    model, thresholds = tiny
    wts = transposed_weights(model)
    assert isinstance(arm_session(model, "masked keep=0.5", thresholds, wts), Teal)
    zero = arm_session(model, "keep=1", thresholds, wts)
    assert isinstance(zero, TealDecode) and zero.thresholds == [0.0] * len(wts)
    assert arm_session(model, "keep=0.6", thresholds, wts).thresholds == thresholds["keep=0.6"]


def test_step_bytes_counts_every_matrix_once_and_the_kept_rows(tiny: tuple[torch.nn.Module, dict]) -> None:
    model, thresholds = tiny
    cfg = model.cfg
    per_layer = cfg.hidden_size * (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim  # qkv
    per_layer += cfg.num_heads * cfg.head_dim * cfg.hidden_size + 3 * cfg.hidden_size * cfg.intermediate_size
    want = 2 * (cfg.num_layers * per_layer + cfg.vocab_size * cfg.hidden_size)  # bf16: 2 bytes; the head once
    assert step_bytes(model, None) == {"bytes": want, "kept": 1.0}
    with torch.no_grad(), TealDecode(model, thresholds["keep=0.5"]) as s:
        model(_ids(1))
        read = step_bytes(model, s)
        sparse = sum(m.kept / m.seen * m.wt.numel() * 2 for m in s.layers)  # the kept rows' bytes
        dense_rest = want - sum(m.wt.numel() * 2 for m in s.layers)  # the head (and the norms' nothing)
    assert read["bytes"] == pytest.approx(dense_rest + sparse, abs=1) and 0.2 < read["kept"] < 0.8


def test_measure_and_summarise(tiny: tuple[torch.nn.Module, dict]) -> None:
    model, thresholds = tiny
    measured = measure(model, _ids(8), thresholds, steps=2, rounds=2)
    assert list(measured) == ["dense", "masked keep=0.5", "keep=1", "keep=0.6", "keep=0.5"]
    out = summarise(measured, bandwidth_gbs=10.0, ppl={"keep=0.5": 0.7})
    assert out["dense"]["speedup"] == 1.0 and out["keep=1"]["speedup_vs_kernel"] == 1.0
    assert out["dense"]["decode_sparsity"] == 0.0 and 0.3 < out["keep=0.5"]["decode_sparsity"] < 0.7
    assert out["keep=0.5"]["weight_mb"] < out["dense"]["weight_mb"]
    assert out["keep=0.5"]["ppl_change_mean"] == 0.7 and out["masked keep=0.5"]["ppl_change_mean"] == 0.7
    assert out["dense"]["ppl_change_mean"] is None and all(v["vs_floor"] > 0 for v in out.values())
    assert set(PAPER_SPEEDUP) <= {"keep=0.6", "keep=0.5"}


def test_read_thresholds(tmp_path: Path) -> None:
    results = {
        "settings": {"method": "teal"},
        "thresholds": {"keep=0.5": [0.1]},
        "ppl_change": {"keep=0.5": {"mean": 0.3}},
    }
    (tmp_path / "r.json").write_text(json.dumps({"results": results}))
    assert read_thresholds(tmp_path / "r.json") == ({"keep=0.5": [0.1]}, {"keep=0.5": 0.3})
    (tmp_path / "c.json").write_text(json.dumps({**results, "settings": {"method": "cats"}}))
    with pytest.raises(SystemExit, match="not a sparsify evaluate --method teal"):
        read_thresholds(tmp_path / "c.json")
