"""The tour records each section's wall time and its CPU time, separately (results.json and the report).

No default model: two small sections on the tiny Llama of the fixtures, one that computes and one that
waits, so that a CPU column copied from the wall clock (or the reverse) fails.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lmbricks.tour import TourContext, run_tour
from lmbricks.tour.run import SummaryRow


def computing(ctx: TourContext) -> list[SummaryRow]:
    ctx.report.section("A computing section")
    end, total = time.process_time() + 0.3, 0
    while time.process_time() < end:  # 0.3 s of this process's CPU time
        total += 1
    return [("computing", "iterations", str(total))]


def waiting(ctx: TourContext) -> list[SummaryRow]:
    ctx.report.section("A waiting section")
    time.sleep(0.4)  # wall time, next to no CPU time
    return [("waiting", "slept", "0.4 s")]


def test_sections_record_wall_and_cpu_seconds_apart(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "tour"
    run_tour(out, quick=True, model_ref=str(tiny_llama), sections=[("computing", computing), ("waiting", waiting)],
             log=lambda _: None)  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    wall, cpu = results["timings_s"], results["timings_cpu_s"]
    assert cpu["computing"] >= 0.29 and wall["computing"] >= cpu["computing"] - 0.02
    assert wall["waiting"] >= 0.39 and cpu["waiting"] < 0.1
    by_name = {s["name"]: s for s in results["sections"]}
    assert by_name["waiting"]["cpu_seconds"] == cpu["waiting"] and by_name["waiting"]["seconds"] == wall["waiting"]
    page = (out / "report.html").read_text()
    assert "CPU seconds" in page[page.index("Seconds spent in each section") :]
