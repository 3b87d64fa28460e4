"""The tour prints no library warning to the user: the sections that once did run here with every warning on.

pytest records warnings itself, so a warning would never reach the captured stderr by default; each test
turns every warning on (``simplefilter("always")``, which also forgets which were already shown), records
them, and checks both that none was raised and that nothing warning-like reached the process's stderr
(transformers' own logger writes its deprecation notes there, not through :mod:`warnings`), nor a progress
bar of transformers' (``hub/hf_compat.py: quiet_loading``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from tests.tour.brick_world import make_brick_world

from lmbricks.tour import run_tour
from lmbricks.tour.bricks import bricks_section
from lmbricks.tour.plugins import plugins_section
from lmbricks.tour.proxy import proxy_section
from lmbricks.tour.run import Section


def _quiet_run(out: Path, model: Path, sections: list[tuple[str, Section]], capfd: pytest.CaptureFixture) -> None:
    """Run ``sections`` and assert that neither a warning nor a deprecation note was emitted."""
    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()  # a note transformers already gave in this process would be silent
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_tour(out, quick=True, model_ref=str(model), sections=sections, log=lambda _: None)
    err = capfd.readouterr().err
    assert [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught] == []
    for word in ("Warning", "deprecated", "COBYLA", "Loading weights", "Writing model shards"):  # bars too
        assert word not in err, err


def test_bricks_and_proxy_sections_are_quiet(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    make_brick_world(tmp_path / "world", tiny_llama, monkeypatch)
    _quiet_run(tmp_path / "tour", tiny_llama, [("bricks", bricks_section), ("proxy", proxy_section)], capfd)


def test_plugins_section_is_quiet(tiny_llama: Path, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    _quiet_run(tmp_path, tiny_llama, [("plugins", plugins_section)], capfd)
