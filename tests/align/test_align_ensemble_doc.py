"""The RL ensemble arm (docs/alignment.md): its tables are the committed JSON, it ran the WARM arm's job,
and its WARM policy is the earlier run's, step for step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUN = "overoptimisation-ensemble-2026-12-07.json"
EARLIER = "overoptimisation-2026-12-07.json"


def _load(name: str) -> dict:
    return json.loads((DOCS / "bench" / name).read_text())


def _cell(gold: float, ci: list[float]) -> str:
    return f"{gold:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def expected_rows(res: dict) -> list[str]:
    """The doc's rows: the training curve of each arm, the held-out figures and the head to head."""
    rl = res["rl"]
    rows = [f"| {t} | {p['steps'][0]}-{p['steps'][1]} | {p['kl']:.2f} | {p['proxy']:.2f} | "
            f"{_cell(p['gold'], p['ci95'])} |" for t, pts in rl["curves"].items() for p in pts]  # fmt: skip
    rows += [f"| {name} | {e['kl']:.2f} | {_cell(e['gold'], e['ci95'])} |" for name, e in rl["held_out"].items()]
    h = rl["head_to_head_held_out"]["warm_vs_ensemble"]
    rows.append(f"| WARM vs ensemble | {h['wins']} | {h['losses']} | {h['ties']} | {100 * h['rate']:.1f} % | "
                f"[{100 * h['ci95'][0]:.1f} %, {100 * h['ci95'][1]:.1f} %] |")  # fmt: skip
    return rows


def test_ensemble_arm_tables_equal_the_committed_json() -> None:
    res = _load(RUN)
    text = (DOCS / "alignment.md").read_text(encoding="utf-8")
    assert f"(bench/{RUN})" in text
    lines = text.splitlines()
    rows = expected_rows(res)
    assert len(rows) == 4 + 4 + 3 + 1
    for row in rows:
        assert row in lines, row


def test_ensemble_arm_ran_the_warm_arms_job_and_reproduced_it() -> None:
    """Same RL job (budget, seeds, learning rate, KL) as the earlier WARM arm; the re-run WARM arm gives
    the earlier one's rewards, gold rewards and token counts at every step (the runs are deterministic)."""
    new, old = _load(RUN), _load(EARLIER)
    assert new["rl"]["job"] == old["rl"]["job"]
    assert list(new["rl"]["steps"]) == ["ensemble", "warm"]
    for a, b in zip(new["rl"]["steps"]["warm"], old["rl"]["steps"]["warm"], strict=True):
        for key in ("step", "sampled_tokens"):
            assert a[key] == b[key], key
        for key in ("reward", "gold", "kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key)
