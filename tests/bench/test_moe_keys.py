"""bench/moe.py's keys compare like with like: each anchor is the faster implementation of its side,
and the training benchmark's keys never overwrite the layer's (issue #22)."""

from __future__ import annotations

import pytest

from moe import anchor_ratios, merge_train


def test_anchor_ratios_use_the_faster_implementation_of_each_side() -> None:
    med = {
        "fwd": {"ours": 120.0, "hf_grouped_mm": 150.0, "hf_eager": 100.0, "dense": 80.0, "dense_fused": 96.0},
        "decode": {"ours": 3.0, "hf_grouped_mm": 4.0, "hf_eager": 6.0, "dense": 2.5, "dense_fused": 2.0},
    }
    out = anchor_ratios(med)
    assert out["fwd_vs_hf"] == pytest.approx(1.2) and out["fwd_anchors"] == {"dense": "dense", "hf": "hf_eager"}
    assert out["fwd_vs_hf_grouped"] == pytest.approx(0.8) and out["fwd_vs_dense"] == pytest.approx(1.5)
    assert out["decode_vs_hf"] == pytest.approx(0.75) and out["decode_vs_hf_grouped"] == pytest.approx(0.75)
    assert out["decode_vs_dense"] == pytest.approx(1.5)
    assert out["decode_anchors"] == {"dense": "dense_fused", "hf": "hf_grouped_mm"}


def test_training_keys_keep_the_layers_rounds_limits_and_clock() -> None:
    layer = {"rounds": {"processes_per_case": 3}, "machine_limits": {"bandwidth_gbs": 9.0}, "clock": "cpu"}
    layer |= {"layer_rounds": layer["rounds"], "precision": "bf16"}
    train = {"rounds": 7, "machine_limits": {"gemm_gflops_bf16": 1.0}, "clock": "wall", "precision": "bf16"}
    out = merge_train(layer, train | {"train_vs_hf": 1.1})
    assert out["rounds"] == out["layer_rounds"] == {"processes_per_case": 3} and out["train_rounds"] == 7
    assert out["machine_limits"] == {"bandwidth_gbs": 9.0} and out["train_machine_limits"]["gemm_gflops_bf16"] == 1.0
    assert out["clock"] == "cpu" and out["train_clock"] == "wall" and out["train_vs_hf"] == 1.1
    with pytest.raises(KeyError, match="layer_rounds"):
        merge_train(layer, {"layer_rounds": 1})
