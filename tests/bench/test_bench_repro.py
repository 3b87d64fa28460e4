"""A benchmark measures the code, not the process's history: two small runs agree on their ratios within 15%.

One test per benchmark on bench/harness.py (train_lm, moe, moefy, proxy), each a small run done
twice, timed by each process's own CPU time on one thread (``clock="cpu"``; page faults
included), so that other processes sharing the machine's cores do not decide the outcome.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("LMBRICKS_BENCH_TESTS") != "1",
        reason="timing test: needs a machine no other test shares (LMBRICKS_BENCH_TESTS=1); measured 1.005 vs "
        "1.191 beside a parallel test run, so it stays out of the shared suite",
    ),
]


def _agree(a: float, b: float) -> bool:
    return abs(a - b) / min(a, b) <= 0.15


def test_train_vs_hf_reproduces_within_15_percent() -> None:
    """bench/train_lm.py --quick on one thread, twice: the ratios agree within 15%."""
    from train_lm import train_vs_hf

    first, second = (
        train_vs_hf(quick=True, precision="fp32", device="cpu", default_alloc_rounds=0, threads=1, clock="cpu")
        for _ in range(2)
    )
    assert _agree(first["train_vs_hf"], second["train_vs_hf"]), (first, second)
    assert first["allocator"]["applied"] and first["precision"] == "fp32" and 0 < first["train_mfu"] < 1
    assert first["machine_limits"]["clock"] == "cpu"


def test_moe_layer_reproduces_within_15_percent() -> None:
    """bench/moe.py's forward phase, two processes per module, twice: both anchors' ratios agree."""
    from machine import measure_machine

    from moe import bench_layer

    torch.set_num_threads(1)
    machine = measure_machine([(2048, 512, 7168)], min_seconds=0.2, clock="cpu")
    first, second = (bench_layer(True, 2, "fp32", machine, 1, "cpu", ("fwd",)) for _ in range(2))
    for key in ("fwd_vs_dense", "fwd_vs_hf"):
        assert _agree(first[key], second[key]), (key, first, second)
    assert 0 < first["fwd_mfu"] < 1 and first["fwd_anchors"]["hf"] in ("hf_grouped_mm", "hf_eager")


def test_moefy_ffn_speedup_reproduces_within_15_percent(tmp_path: Path) -> None:
    """bench/moefy.py's FFN prefill timing on a random SmolLM2-sized FFN (32 experts), twice."""
    import torch.nn.functional as F
    from moefy_workers import save_ffn
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    from lmbricks.moefy.routers import LinearRouter
    from lmbricks.moefy.runtime import MoefiedFFN
    from moefy import timings

    torch.manual_seed(0)
    dense = LlamaMLP(LlamaConfig(hidden_size=576, intermediate_size=1536, hidden_act="silu"))
    moefied = MoefiedFFN.from_dense(
        dense.gate_proj.weight.detach(), dense.up_proj.weight.detach(), dense.down_proj.weight.detach(),
        32, F.silu, router=LinearRouter(576, 32), top_k=16,
    )  # fmt: skip
    save_ffn(tmp_path, dense, moefied, 576)
    first, second = (timings(str(tmp_path), "", [8], 2, 1, "cpu", phases=("ffn_prefill",)) for _ in range(2))
    speedups = [t["ffn_prefill"][min(("dense", "dense_fused"), key=t["ffn_prefill"].get)] / t["ffn_prefill"]["K=8"]
                for t in (first, second)]  # fmt: skip
    assert _agree(*speedups), (first, second)


@pytest.mark.integration
def test_proxy_vs_limit_reproduces_within_15_percent() -> None:
    """bench/proxy.py on the default model, 8 tokens for 2 prompts, one process per workload, twice."""
    from proxy import proxy_vs_limit

    first, second = (proxy_vs_limit(new_tokens=8, batch=2, rounds=1, threads=1, clock="cpu") for _ in range(2))
    for key in ("vs_estimated_limit", "vs_nocache"):
        assert _agree(first[key], second[key]), (key, first, second)
    assert first["vs_limit"] == first["vs_estimated_limit"] and 0 < first["decode_bandwidth_share"] < 1
