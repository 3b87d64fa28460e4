"""atomic_directory: all or nothing, even under SIGKILL; existing outputs refused unless forced."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lmbricks.checkpoint import atomic, atomic_directory, clean_stale_temps
from lmbricks.errors import ConfigError


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_normal_exit_renames_into_place(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with atomic_directory(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".out.tmp-{os.getpid()}-")
        (tmp / "a.txt").write_text("A")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("B")
        assert not dest.exists()  # nothing visible until the block ends
    assert _listing(tmp_path) == ["out"]
    assert (dest / "a.txt").read_text() == "A" and (dest / "sub" / "b.txt").read_text() == "B"


def test_existing_dest_refused_before_the_block_runs(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")
    ran = False
    expected = re.escape(f"{dest} already exists; pass force=True (CLI: --force)")
    with pytest.raises(ConfigError, match=expected), atomic_directory(dest):
        ran = True
    assert not ran
    assert _listing(tmp_path) == ["out"] and (dest / "keep.txt").read_text() == "old"


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "fallback"])
def test_force_replaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool) -> None:
    if not exchange:
        monkeypatch.setattr(atomic, "_RENAMEAT2", None)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    (dest / "lmbricks.json").write_text("{}")  # force replaces only what lmbricks wrote
    with atomic_directory(dest, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (dest / "old.txt").exists()  # the old output stays readable while we write
    assert _listing(dest) == ["new.txt"]
    assert _listing(tmp_path) == ["out"]  # the old copy is gone, no hidden leftovers


def test_exception_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(dest) as tmp:
        (tmp / "partial.bin").write_bytes(b"x" * 100)
        raise RuntimeError("boom")
    assert _listing(tmp_path) == []


def test_exception_with_force_keeps_the_old_output(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    (dest / "lmbricks.json").write_text("{}")
    with pytest.raises(KeyboardInterrupt), atomic_directory(dest, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert _listing(tmp_path) == ["out"] and _listing(dest) == ["lmbricks.json", "old.txt"]


def test_dest_appearing_during_the_write_is_not_clobbered(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(ConfigError, match="already exists"), atomic_directory(dest) as tmp:
        (tmp / "mine.txt").write_text("mine")
        dest.mkdir()  # someone else got there first (even an empty directory is kept)
        (dest / "theirs.txt").write_text("theirs")
    assert _listing(tmp_path) == ["out"] and _listing(dest) == ["theirs.txt"]


_CHILD = textwrap.dedent(
    """
    import sys, time, torch
    from lmbricks.checkpoint import ShardedWriter, atomic_directory

    with atomic_directory(sys.argv[1]) as tmp:
        writer = ShardedWriter(tmp, "20MB")
        for i in range(20):  # 20 x 10 MB, slowly
            writer.add(f"t{i}", torch.randn(2_500_000))
            time.sleep(0.2)
        writer.finish()
    print("finished", flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_mid_write_leaves_no_destination(tmp_path: Path) -> None:
    parent = tmp_path / "models"
    dest = parent / "merged"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(dest)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        # Wait until the child has written at least one whole shard into its temp dir.
        while not list(parent.glob(".merged.tmp-*/.shard-*.partial")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "child never started writing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        out, _err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL and b"finished" not in out
    assert not dest.exists()
    leftovers = _listing(parent)
    assert len(leftovers) == 1 and leftovers[0].startswith(f".merged.tmp-{proc.pid}-")  # hidden only
    assert list((parent / leftovers[0]).iterdir())  # it really was mid-write
    assert clean_stale_temps(parent) == [parent / leftovers[0]]
    assert _listing(parent) == []


def test_clean_stale_temps_keeps_live_writers(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".model.tmp-{dead.pid}-0123abcd"
    stale_old = tmp_path / f".model.old-{dead.pid}-89abcdef"
    live = tmp_path / f".model.tmp-{os.getpid()}-deadbeef"
    unrelated = tmp_path / ".cache"
    for d in (stale, stale_old, live, unrelated):
        d.mkdir()
        (d / "f").write_text("x")
    assert sorted(clean_stale_temps(tmp_path)) == sorted([stale, stale_old])
    assert _listing(tmp_path) == sorted([live.name, unrelated.name])
    assert clean_stale_temps(tmp_path / "missing") == []
