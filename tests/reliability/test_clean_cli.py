"""``lmbricks clean``: stale temporaries of dead writers go, a live writer's stays, nothing else is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_helpers import error_lines, snapshot
from typer.testing import CliRunner

from lmbricks.cli.main import app

runner = CliRunner()


def _temp(parent: Path, name: str, pid: int, size: int) -> Path:
    path = parent / f".{name}.tmp-{pid}-0123abcd"
    (path / "sub").mkdir(parents=True)
    (path / "sub" / "shard").write_bytes(b"x" * size)
    return path


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_clean_removes_only_dead_writers_temporaries(
    tmp_path: Path, dead_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, home = tmp_path / "work", tmp_path / "home"
    stale_run = _temp(work / "runs" / "a" / "checkpoints", "step-000008", dead_pid, 1000)
    stale_home = _temp(home / "models", "smollm2", dead_pid, 500)
    live = _temp(work / "runs", "merged", os.getpid(), 300)
    (work / "runs" / "merged").mkdir()
    (work / "runs" / "merged" / "model.safetensors").write_bytes(b"keep")
    (work / f".notes.tmp-{dead_pid}-0123abcd").write_text("a file, not a temporary")
    keep = snapshot(live, work / "runs" / "merged", work / f".notes.tmp-{dead_pid}-0123abcd")
    monkeypatch.chdir(work)
    monkeypatch.setenv("LMBRICKS_HOME", str(home))

    dry = runner.invoke(app, ["clean", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    listed = json.loads(dry.stdout)
    assert sorted(r["path"] for r in listed["removed"]) == sorted([str(stale_run), str(stale_home)])
    assert listed["bytes_freed"] == 0 and stale_run.exists() and stale_home.exists()

    res = runner.invoke(app, ["clean", "--json"])  # default: the current directory and $LMBRICKS_HOME
    assert res.exit_code == 0, res.output
    done = json.loads(res.stdout)
    assert {r["path"]: r["bytes"] for r in done["removed"]} == {str(stale_run): 1000, str(stale_home): 500}
    assert done["bytes_freed"] == 1500 and all(r["pid"] == dead_pid for r in done["removed"])
    assert not stale_run.exists() and not stale_home.exists()
    assert snapshot(live, work / "runs" / "merged", work / f".notes.tmp-{dead_pid}-0123abcd") == keep

    again = runner.invoke(app, ["clean", str(work)])
    assert again.exit_code == 0 and "0 stale temporaries removed, 0 B freed" in again.output


def test_clean_depth_and_errors(tmp_path: Path, dead_pid: int) -> None:
    deep = _temp(tmp_path / "1" / "2", "m", dead_pid, 10)
    res = runner.invoke(app, ["clean", str(tmp_path), "--depth", "2"])
    assert res.exit_code == 0 and deep.exists()  # three levels down: not searched
    res = runner.invoke(app, ["clean", str(tmp_path), "--depth", "3"])
    assert res.exit_code == 0 and not deep.exists()
    assert f"removed {deep} (10 B, writer pid {dead_pid} is gone)" in res.output
    bad = runner.invoke(app, ["clean", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and len(error_lines(bad.output)) == 1 and "not a directory" in bad.output
