"""docs/alignment.md's RL-step memory table and its DPO and thread figures are the committed JSONs."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
RL_ROWS = {  # the table's first cell -> its JSON under docs/bench/
    "keeps activations (`--no-recompute`)": "align-norecompute-2026-12-07.json",
    "recomputes them, full-logit head": "align-recompute-2026-12-07.json",
    "recomputes them, head in chunks (the default)": "align-chunked-2026-12-07.json",
}
DPO = "align-dpo-2026-12-07.json"
THREADS = "align-threads-2026-12-07.json"
HEAD = "align-head-2026-12-07.json"


def _load(name: str) -> dict:
    return json.loads((DOCS / "bench" / name).read_text())


def _lines() -> list[str]:
    return (DOCS / "alignment.md").read_text(encoding="utf-8").splitlines()


def rl_row(label: str, res: dict) -> str:
    p = res["parts_cpu_s"]
    return (f"| {label} | {res['rl_peak_rss_gb']:.2f} GB | {res['step_cpu_s']:.1f} | {p['sampling']:.1f} / "
            f"{p['scoring']:.1f} / {p['updating']:.1f} | {res['sampling_vs_generate']:.2f} |")  # fmt: skip


def test_rl_memory_table_is_the_json() -> None:
    lines = _lines()
    for label, name in RL_ROWS.items():
        res = _load(name)
        assert res["threads"] == 1 and res["clock"].startswith("cpu")
        assert rl_row(label, res) in lines, rl_row(label, res)
        assert any(f"(bench/{name})" in line for line in lines), name


def test_dpo_memory_row_is_the_json() -> None:
    res = _load(DPO)
    on, off = res["recompute"], res["keep"]
    row = (f"| one DPO step, {res['pairs']} pairs, LoRA | {off['step_peak_rss_gb'] - off['rss_before_step_gb']:.2f} GB"
           f" | {on['step_peak_rss_gb'] - on['rss_before_step_gb']:.2f} GB | {off['step_cpu_s']:.1f} | "
           f"{on['step_cpu_s']:.1f} |")  # fmt: skip
    assert row in _lines(), row
    grads = [r["grad_abs_sum"] for side in ("recompute", "keep") for r in res["runs"][side]]
    assert len(set(grads)) == 1  # recompute changed no gradient


def test_thread_efficiency_rows_are_the_json() -> None:
    res = _load(THREADS)
    lines = _lines()
    for part, r in res["parts"].items():
        one, two = r["threads_1"], r["threads_2"]
        row = (f"| {part} | {one['cpu_s']:.2f} | {two['cpu_s']:.2f} | {two['main_thread_s']:.2f} | "
               f"{r['efficiency']:.2f} |")  # fmt: skip
        assert row in lines, row


def test_head_rows_are_the_json() -> None:
    res = _load(HEAD)
    lines = _lines()
    for label, side in (("full logits (before)", "full"), ("chunked (now)", "chunked")):
        row = f"| {label} | {res['cpu_s'][side]:.2f} | {res['kept_mb'][side]:.1f} MB |"
        assert row in lines, row
    assert res["max_logp_diff"] < 1e-4 and res["kept_mb"]["chunked"] < res["kept_mb"]["full"] / 100


def test_quiet_two_thread_step_is_the_json() -> None:
    res = _load("align-2threads-quiet-2026-12-07.json")
    text = " ".join(" ".join(_lines()).split())  # the prose, whatever its wrapping
    limits = res["machine_limits"]["gemm_by_shape"]["256x576x1536"]
    assert res["threads"] == 2 and res["machine_limits"]["load_average"][0] < 2.5
    share = res["shares"]
    cpu, wall = res["step_cpu_s"], res["step_wall_s"]
    figures = [
        f"**{wall:.1f} s of wall time**",
        f"({cpu:.1f} CPU-s",
        f"{cpu:.1f} / (2 x {wall:.1f}) = {cpu / (2 * wall):.2f}",
        f"sampling {100 * share['sampling']:.1f}%",
        f"scoring {100 * share['scoring']:.1f}%",
        f"the update {100 * share['updating']:.1f}%",
        f"`sampling_vs_generate` {res['sampling_vs_generate']:.3f}",
        f"peak RSS {res['rl_peak_rss_gb']:.2f} GB",
        f"bf16 GEMM of {limits['bf16']:.0f} GFLOP/s",
        f"against {limits['fp32']:.0f} in fp32",
        f"at {limits['bf16'] / limits['fp32']:.2f}x the fp32 rate",
    ]
    for figure in figures:
        assert figure in text, figure
