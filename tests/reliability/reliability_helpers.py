"""Helpers for the reliability suite: hash trees, check refusals, run and kill the real CLI."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

SRC = Path(__file__).resolve().parents[2] / "src"

#: Runs ``lmbricks`` with optional slow-downs, so that a test can SIGKILL it inside a write:
#: SLOW_ADD sleeps before each tensor a ShardedWriter writes, SLOW_COMMIT before atomic_directory's
#: final fsync and rename (the output is then complete in its temporary). The code paths are the
#: production ones; only the timing changes.
HARNESS = """
import os, sys, time
add, commit = float(os.environ.get("SLOW_ADD", 0)), float(os.environ.get("SLOW_COMMIT", 0))
if add:
    from lmbricks.checkpoint import writer
    real_add = writer.ShardedWriter.add
    def slow_add(self, name, tensor):
        time.sleep(add)
        return real_add(self, name, tensor)
    writer.ShardedWriter.add = slow_add
if commit:
    from lmbricks.checkpoint import atomic
    real_fsync = atomic.fsync_tree
    def slow_fsync(root):
        time.sleep(commit)
        return real_fsync(root)
    atomic.fsync_tree = slow_fsync
from lmbricks.cli.main import app
sys.argv = ["lmbricks", *sys.argv[1:]]
app()
"""

TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def snapshot(*roots: Path, skip: tuple[str, ...] = ("hashes.json",)) -> dict[str, str]:
    """Every file (SHA-256), directory and link under ``roots``, keyed by path: equal means untouched."""
    found: dict[str, str] = {}
    for root in roots:
        if root.is_symlink() or root.is_file():
            found[str(root)] = _entry(root)
            continue
        for dirpath, dirs, files in os.walk(root):
            found[dirpath] = "dir"
            for name in sorted(dirs + files):
                p = Path(dirpath) / name
                if name not in skip and (p.is_symlink() or p.is_file()):
                    found[str(p)] = _entry(p)
    return found


def _entry(p: Path) -> str:
    if p.is_symlink():
        return f"link -> {os.readlink(p)}"
    return hashlib.sha256(p.read_bytes()).hexdigest()


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_refused(result: Any, path: Path, reason: str) -> str:
    """Exit code 2, exactly one ``error:`` line naming ``path`` and ``reason``, no traceback."""
    out = result.output
    assert result.exit_code == 2, out
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out, out
    lines = error_lines(out)
    assert len(lines) == 1, out
    assert str(path) in lines[0] and reason in lines[0], lines[0]
    return lines[0]


def cli_env(home: Path, **extra: Any) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(LMBRICKS_HOME=str(home), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", COLUMNS="200")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """``lmbricks ARGS`` through the harness, in a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-c", HARNESS, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], delay: float, timeout: float = 120) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` first holds; fail if it ends before."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended (rc {proc.returncode}) before it could be killed:\n{err.decode()}")
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.01)
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before the kill: the test proves nothing"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def temps_of(parent: Path, name: str) -> list[Path]:
    """The hidden temporaries of destination ``name`` in ``parent``."""
    if not parent.is_dir():
        return []
    return [p for p in parent.iterdir() if (m := TEMP.match(p.name)) and m["name"] == name]


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
