"""A full disk: a merge into a tiny tmpfs gives one clear error line naming the output, and leaves nothing."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_helpers import assert_refused, snapshot
from typer.testing import CliRunner

from lmbricks.cli.main import app


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (the tiny merge needs about 200 KiB); skipped where it cannot be mounted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip() or mounted.returncode}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_merge_onto_a_full_disk(small_disk: Path, models: dict[str, Path], recipe: Path, home: Path) -> None:
    out = small_disk / "merged"
    inputs = snapshot(models["a"], models["b"], recipe)
    result = CliRunner().invoke(app, ["merge", str(recipe), str(out)])
    line = assert_refused(result, out, "No space left on device (disk full)")
    assert line.startswith(f"error: {out}: writing failed")
    assert list(small_disk.iterdir()) == []  # no output, no temporary
    assert snapshot(models["a"], models["b"], recipe) == inputs
