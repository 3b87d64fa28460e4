"""bench/harness.py: each workload in a fresh forked process, alternating, with its own environment."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from harness import Workload, alternate, medians

SCRIPT = textwrap.dedent(
    """
    import os

    COUNTER = []  # module state: a fresh process sees it empty

    def probe(value):
        COUNTER.append(value)
        return {"pid": os.getpid(), "seen": len(COUNTER), "value": value, "flag": os.environ.get("PROBE_FLAG")}

    def fails():
        raise ValueError("no")
    """
)


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("harness") / "probe_bench.py"
    path.write_text(SCRIPT)
    return str(path)


def test_alternate_runs_each_workload_in_a_fresh_process(script: str) -> None:
    runs = alternate(
        {
            "a": Workload(script, "probe", {"value": 1.0}),
            "b": Workload(script, "probe", {"value": 3.0}, env={"PROBE_FLAG": "x", "LMBRICKS_TUNE_ALLOCATOR": "0"}),
        },
        rounds=3,
    )
    pids = [r["pid"] for rs in runs.values() for r in rs]
    assert len(set(pids)) == 6  # a process per workload and round
    assert all(r["seen"] == 1 for rs in runs.values() for r in rs)  # no history from an earlier workload
    assert [r["flag"] for r in runs["b"]] == ["x"] * 3 and runs["a"][0]["flag"] is None
    assert not runs["b"][0]["allocator"]["applied"] and "turned off" in runs["b"][0]["allocator"]["reason"]
    assert medians(runs, "value") == {"a": 1.0, "b": 3.0}


def test_a_failing_workload_raises(script: str) -> None:
    with pytest.raises(RuntimeError, match="fails"):
        alternate({"x": Workload(script, "fails")}, rounds=1)


def test_machine_limits_keys() -> None:
    from machine import measure_machine

    m = measure_machine([(256, 256, 256)], "cpu", min_seconds=0.01)
    assert {"gemm_gflops_fp32", "gemm_gflops_bf16", "bandwidth_gbs"} <= set(m)
    assert m["gemm_gflops_fp32"] > 0 and m["bandwidth_gbs"] > 0 and len(m["load_average"]) == 3
    assert m["clock"] == "wall" and set(m["by_clock"]) == {"wall", "cpu"}
    assert m["gemm_gflops_fp32"] == m["by_clock"]["wall"]["gemm_gflops_fp32"]


def test_machine_limits_by_the_cpu_clock() -> None:
    """Under --clock cpu the summary keys are the CPU clock's (what a CPU-timed workload divides by)."""
    from machine import measure_machine

    m = measure_machine([(256, 256, 256)], "cpu", min_seconds=0.01, clock="cpu")
    assert m["clock"] == "cpu" and m["bandwidth_gbs"] == m["by_clock"]["cpu"]["bandwidth_gbs"]
    assert m["gemm_gflops_bf16"] == m["by_clock"]["cpu"]["gemm_gflops_bf16"]
    with pytest.raises(ValueError, match="clock"):
        measure_machine([(8, 8, 8)], "cpu", min_seconds=0.01, clock="gpu")


def test_time_calls_reads_both_clocks() -> None:
    """A sleeping call takes wall time but almost no CPU time; a spinning one takes both."""
    import time

    from harness import time_calls

    calls: list[int] = []
    slept = time_calls(lambda: (calls.append(1), time.sleep(0.02)), reps=3, warmup=2)
    assert len(calls) == 5 and slept["seconds"] >= 0.02 and slept["cpu_seconds"] < 0.01

    def spin() -> None:
        t0 = time.process_time()
        while time.process_time() - t0 < 0.02:
            pass

    spun = time_calls(spin, reps=3, warmup=0)
    assert spun["cpu_seconds"] >= 0.02 and spun["seconds"] >= spun["cpu_seconds"] * 0.9


def test_step_flops_counts_matmuls_and_attention() -> None:
    from train_lm import step_flops

    shape = dict(
        vocab_size=10, hidden_size=4, intermediate_size=6, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1,
    )  # fmt: skip
    flops = step_flops(shape, batch=3, seq=5)
    per_layer = 2 * 4 * 4 + 2 * 4 * 2 + 3 * 4 * 6  # q, o; k, v (kv width 2); gate, up, down
    n = 2 * per_layer + 4 * 10
    assert flops["matmul_params"] == n and flops["matmul"] == 6 * n * 15
    assert flops["attention"] == 12 * 2 * 4 * 5 * 15 and flops["total"] == flops["matmul"] + flops["attention"]


def test_bench_scripts_tune_their_process() -> None:
    """Every benchmark calls lmbricks.tune_process() at its start (the harness's children do too).

    ``*_workers.py`` modules hold workloads that only the harness's children run.
    """
    bench = Path(__file__).resolve().parents[2] / "bench"
    for path in bench.glob("*.py"):
        if path.name != "harness.py" and not path.stem.endswith("_workers"):
            assert "tune_process()" in path.read_text(), path.name
