"""Sections that need bricks, on a model that has none: each is a visible skip with its reason, never a pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmbricks.tour import run_tour
from lmbricks.tour.bricks import bricks_section
from lmbricks.tour.grow import grow_section
from lmbricks.tour.merge import merge_section
from lmbricks.tour.proxy import proxy_section
from lmbricks.tour.run import Section

CASES = {
    "bricks": (bricks_section, "no bricks are catalogued for"),
    "merge": (merge_section, "no shipped bricks for"),
    "grow": (grow_section, "0 domain brick(s) catalogued for"),
    "proxy": (proxy_section, "no brick is catalogued for"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_section_without_bricks_is_skipped(
    name: str, tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LMBRICKS_BRICKS", str(tmp_path / "no-bricks"))
    section: Section = CASES[name][0]
    page = run_tour(tmp_path / "tour", quick=True, model_ref=str(tiny_llama), sections=[(name, section)],
                    log=lambda _: None).read_text()  # fmt: skip
    (entry,) = json.loads((tmp_path / "tour" / "results.json").read_text())["sections"]
    assert entry["status"] == "skipped" and CASES[name][1] in entry["reason"]
    assert f"skipped: {CASES[name][1]}" in page and f'<tr class="skipped"><td>{name}</td>' in page
