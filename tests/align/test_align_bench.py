"""bench/align.py --quick runs end to end in fresh processes and reports a consistent step (no timing assertion)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))


@pytest.mark.slow
def test_quick_bench_reports_the_step_and_its_parts(tmp_path: Path) -> None:
    from align import main  # bench/align.py

    res = main(["--quick", "--steps", "2", "--json", str(tmp_path / "align.json")])
    parts = res["parts_cpu_s"]
    assert set(parts) == {"sampling", "scoring", "updating"} and all(v > 0 for v in parts.values())
    assert abs(sum(res["shares"].values()) - 1) < 0.01
    assert res["sampled_tokens"] > 0 and res["rl_sampled_tokens_per_cpu_s"] > 0
    assert res["generate_tokens_per_cpu_s"] > 0 and res["sampling_vs_generate"] > 0
    assert res["timed_steps_per_process"] == 1 and len(res["runs"]["rl"][0]["records"]) == 1
    assert res["machine_limits"]["clock"] == "cpu" and (tmp_path / "align.json").exists()
    assert res["recompute"] is True and res["rl_peak_rss_gb"] > 0.1  # a process with torch loaded
