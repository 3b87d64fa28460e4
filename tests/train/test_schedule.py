"""Learning-rate schedules have the documented shapes."""

from __future__ import annotations

import math

import pytest

from lmbricks.train.config import ScheduleConfig
from lmbricks.train.schedule import lr_multiplier


def _curve(kind: str, total: int = 100, **kw: float) -> list[float]:
    cfg = ScheduleConfig(kind=kind, **kw)  # type: ignore[arg-type]
    return [lr_multiplier(s, total, cfg) for s in range(total)]


def test_warmup_is_linear_to_one() -> None:
    c = _curve("cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert c[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert c[10] == pytest.approx(1.0)


def test_cosine_falls_monotonically_to_min_with_half_at_midpoint() -> None:
    c = _curve("cosine", total=101, warmup_steps=0, min_lr_ratio=0.1)
    assert c[0] == pytest.approx(1.0) and c[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(c, c[1:], strict=False))
    assert c[50] == pytest.approx(0.1 + 0.9 * 0.5)  # cos(pi/2) = 0: halfway between 1 and min
    assert c[25] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_wsd_is_flat_then_decays_linearly_in_the_last_fraction() -> None:
    c = _curve("wsd", total=100, warmup_steps=5, decay_fraction=0.2, min_lr_ratio=0.0)
    assert all(v == 1.0 for v in c[5:79])
    tail = c[79:]
    assert tail[-1] == pytest.approx(0.0)
    diffs = [a - b for a, b in zip(tail, tail[1:], strict=False)]
    assert max(diffs) == pytest.approx(min(diffs))  # linear


def test_constant_after_warmup() -> None:
    assert _curve("constant", total=20, warmup_steps=4)[4:] == [1.0] * 16
