"""The input guard: outputs keep apart from inputs; --force replaces only what lmbricks wrote."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmbricks.checkpoint import (
    atomic_directory,
    check_output,
    clean_stale_temps,
    find_stale_temps,
    remove_stale_temps,
)
from lmbricks.errors import CheckpointError, ConfigError


def _model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"weights")
    return path


def _ours(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "lmbricks.json").write_text("{}")
    (path / "old.txt").write_text("old")
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("force", [False, True])
def test_an_input_is_never_the_output(tmp_path: Path, force: bool) -> None:
    model = _model(tmp_path / "m")
    with pytest.raises(ConfigError, match=rf"^{model} is the input {model}; write the output somewhere else$"):
        check_output(model, [model], force=force)


def test_a_link_to_an_input_is_the_input(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    (tmp_path / "link").symlink_to(model)
    with pytest.raises(ConfigError, match="is the input"):
        check_output(tmp_path / "link", [model], force=True)
    with pytest.raises(ConfigError, match="is the input"):  # and the other way round
        check_output(model, [tmp_path / "link"], force=True)


def test_the_folder_holding_an_input_is_refused(tmp_path: Path) -> None:
    model = _model(tmp_path / "models" / "m")
    (tmp_path / "models" / "lmbricks.json").write_text("{}")  # even if lmbricks once wrote it
    with pytest.raises(ConfigError, match=f"contains the input {model}"):
        check_output(tmp_path / "models", [model], force=True)
    # a link inside the output that points elsewhere is still an input path the output would delete
    elsewhere = _model(tmp_path / "far" / "m")
    (tmp_path / "models" / "ln").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="contains the input"):
        check_output(tmp_path / "models", [tmp_path / "models" / "ln"], force=True)


def test_an_output_inside_an_input_is_refused(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    with pytest.raises(ConfigError, match="lies inside the input 'base'"):
        check_output(model / "merged", {"base": model})


def test_a_file_is_never_replaced(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("merge_method: linear\n")
    with pytest.raises(ConfigError, match="is the input"):
        check_output(recipe, {"recipe": recipe}, force=True)
    with pytest.raises(ConfigError, match="is a file; --force replaces only a directory that lmbricks wrote"):
        check_output(recipe, (), force=True)
    with pytest.raises(ConfigError, match="already exists"):
        check_output(recipe, ())
    with pytest.raises(ConfigError, match=f"its parent {recipe} is not a directory"):
        check_output(recipe / "out", ())
    assert recipe.read_text() == "merge_method: linear\n"


def test_force_replaces_only_lmbricks_outputs(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match=r"not written by lmbricks \(it has no lmbricks.json\)"):
        check_output(mine, (), force=True)
    (tmp_path / "link").symlink_to(_ours(tmp_path / "ours"))
    with pytest.raises(ConfigError, match="is a symbolic link"):
        check_output(tmp_path / "link", (), force=True)
    assert check_output(tmp_path / "ours", (), force=True) == tmp_path / "ours"
    assert check_output(tmp_path / "new", ()) == tmp_path / "new"


def test_missing_inputs_and_siblings_are_fine(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    assert check_output(tmp_path / "m-merged", [model, tmp_path / "not-there", None])
    assert check_output(tmp_path / "out", {"recipe": None}) == tmp_path / "out"


def test_atomic_directory_refuses_before_creating_anything(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    before = sorted(p.name for p in model.iterdir())
    ran = False
    with pytest.raises(ConfigError, match="lies inside"), atomic_directory(model / "out", inputs=[model]):
        ran = True
    assert not ran and sorted(p.name for p in model.iterdir()) == before


def test_atomic_directory_checks_again_before_the_rename(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(ConfigError, match="not written by lmbricks"), atomic_directory(dest, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        dest.mkdir()  # a folder of someone else's appears meanwhile: forced or not, it stays
        (dest / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (dest / "theirs.txt").exists()


def test_atomic_directory_replaces_its_own_output_and_marker_is_configurable(tmp_path: Path) -> None:
    dest = _ours(tmp_path / "out")
    with atomic_directory(dest, force=True) as tmp:
        (tmp / "lmbricks.json").write_text("{}")
    assert sorted(p.name for p in dest.iterdir()) == ["lmbricks.json"]
    domain = tmp_path / "domain"
    domain.mkdir()
    (domain / "manifest.json").write_text("{}")
    with atomic_directory(domain, force=True, marker="manifest.json") as tmp:
        (tmp / "manifest.json").write_text('{"v": 2}')
    assert (domain / "manifest.json").read_text() == '{"v": 2}'


def test_disk_full_is_a_checkpoint_error_naming_the_output(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    full = rf"^{dest}: writing failed: No space left on device \(disk full\)"
    with pytest.raises(CheckpointError, match=full), atomic_directory(dest) as tmp:
        (tmp / "part").write_text("x")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "part"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="not a storage error"), atomic_directory(dest):
        raise OSError("not a storage error")  # a plain OSError (no errno) is not rewritten


def test_a_new_write_removes_the_stale_temporaries_of_its_destination(tmp_path: Path) -> None:
    pid = _dead_pid()
    stale = tmp_path / f".out.tmp-{pid}-0123abcd"
    other = tmp_path / f".other.tmp-{pid}-0123abcd"
    live = tmp_path / f".out.tmp-{os.getpid()}-89abcdef"
    for d in (stale, other, live):
        d.mkdir()
        (d / "shard").write_bytes(b"x" * 10)
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "f").write_text("f")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", other.name, live.name])
    assert clean_stale_temps(tmp_path, "other") == [other]


def test_find_and_remove_stale_temporaries_recursively(tmp_path: Path) -> None:
    pid = _dead_pid()
    deep = tmp_path / "runs" / "a" / "checkpoints" / f".step-000008.tmp-{pid}-0123abcd"
    too_deep = tmp_path / "1" / "2" / "3" / "4" / f".x.tmp-{pid}-0123abcd"
    live = tmp_path / "runs" / f".b.tmp-{os.getpid()}-0123abcd"
    a_file = tmp_path / f".f.tmp-{pid}-0123abcd"
    for d in (deep, too_deep, live):
        d.mkdir(parents=True)
        (d / "shard").write_bytes(b"x" * 100)
    a_file.write_text("a file of the user's with a temporary's name")
    (live / f".inner.tmp-{pid}-0123abcd").mkdir()  # inside a live writer's temp: never looked at
    found = find_stale_temps([tmp_path, tmp_path / "runs"], depth=4)
    assert [s.path for s in found] == [deep] and found[0].bytes == 100 and found[0].pid == pid
    assert [s.path for s in find_stale_temps([tmp_path], depth=5)] == [too_deep, deep]
    assert remove_stale_temps(found) == found
    assert not deep.exists() and live.exists() and too_deep.exists() and a_file.exists()
