"""Write a directory so that readers see either nothing or the finished result.

:func:`atomic_directory` hands out a hidden temporary directory beside the destination and renames
it into place only when the ``with`` block ends normally (after fsyncing every file). A process that
dies mid-write (even by SIGKILL) leaves the destination untouched; at worst a hidden
``.<name>.tmp-<pid>-<hex>`` directory remains beside it, which :func:`clean_stale_temps` removes once
the process whose pid it carries is gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmbricks.checkpoint.guard import Inputs, check_output
from lmbricks.checkpoint.provenance import PROVENANCE_FILE
from lmbricks.errors import CheckpointError, ConfigError

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _renameat2_fn() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:  # pragma: no cover - no libc (Windows)
        return None
    return getattr(libc, "renameat2", None)


_RENAMEAT2 = _renameat2_fn()


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux ``renameat2``; False when the call or the flag is not supported here (use a fallback)."""
    if _RENAMEAT2 is None:
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def _fsync_path(path: Path, directory: bool) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (files first, then their directories)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                _fsync_path(path, directory=False)
        _fsync_path(Path(dirpath), directory=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _hidden_sibling(dest: Path, kind: str) -> Path:
    """Create (mkdir) a fresh hidden directory ``<parent>/.<name>.<kind>-<pid>-<hex>``."""
    while True:
        path = dest.parent / f".{dest.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()  # mode 0o777 & ~umask, like any directory the user creates
            return path
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def _refuse(dest: Path) -> ConfigError:
    return ConfigError(f"{dest} already exists; pass force=True (CLI: --force) to replace it")


#: errno values that mean the storage itself failed (not a bug): reported as one line naming the output.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


def write_failure(dest: Path, exc: OSError) -> CheckpointError:
    """A :class:`CheckpointError` naming ``dest`` and the system's reason (disk full, read-only...)."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += " (disk full)"
    where = f" at {exc.filename}" if exc.filename else ""
    return CheckpointError(
        f"{dest}: writing failed: {reason}{where}; no partial output was left and any previous output is unchanged"
    )


@contextmanager
def atomic_directory(
    dest: str | Path, force: bool = False, *, inputs: Inputs = (), marker: str = PROVENANCE_FILE
) -> Iterator[Path]:
    """Build a directory in a hidden temp dir beside ``dest``, then rename it into place.

    Before anything is created, ``dest`` goes through the input guard
    (:func:`~lmbricks.checkpoint.guard.check_output`: never an input, never inside or around one;
    with ``force`` only a directory lmbricks wrote is replaced), and stale temporaries of earlier
    killed writes to the same ``dest`` are removed. On normal exit every file and directory is
    fsynced, the guard runs again, and the temp dir is renamed to ``dest``; with ``force`` an
    existing ``dest`` is swapped out (atomically with Linux ``renameat2`` ``RENAME_EXCHANGE``,
    otherwise moved aside first) and then deleted. If the block raises, the temp dir is deleted; a
    system error (disk full, read-only file system...) becomes a :class:`CheckpointError` naming
    ``dest``. If the process is killed, ``dest`` is unchanged and a hidden
    ``.<name>.tmp-<pid>-<hex>`` directory may remain: the next write to ``dest``, or
    ``lmbricks clean``, removes it.

    Args:
        dest: the directory to create.
        force: replace ``dest`` if it exists (and lmbricks wrote it).
        inputs: paths the writer reads (or label -> path); ``dest`` must keep apart from them.
        marker: the file that marks a replaceable output (default ``lmbricks.json``).

    Yields:
        The temporary directory to write into.

    Raises:
        ConfigError: ``dest`` is refused by the guard (raised before anything is created).
        CheckpointError: the storage failed while writing.
    """
    dest = check_output(dest, inputs, force, marker=marker)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(dest.parent, dest.name)
        tmp = _hidden_sibling(dest, "tmp")
    except OSError as exc:
        if exc.errno in _STORAGE_ERRNOS:
            raise write_failure(dest, exc) from exc
        raise
    try:
        yield tmp
        fsync_tree(tmp)
        check_output(dest, inputs, force, marker=marker)  # it may have appeared, or changed, meanwhile
        _move_into_place(tmp, dest)
        _fsync_path(dest.parent, directory=True)
    except OSError as exc:
        _remove(tmp)
        if exc.errno in _STORAGE_ERRNOS:
            raise write_failure(dest, exc) from exc
        raise
    except BaseException:
        _remove(tmp)
        raise


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an existing ``dest`` is swapped out (atomically where Linux can) and removed."""
    if not (dest.exists() or dest.is_symlink()):
        try:
            renamed = _renameat2(tmp, dest, _RENAME_NOREPLACE)
        except FileExistsError:  # pragma: no cover - appeared in the last microseconds
            raise _refuse(dest) from None
        if not renamed:
            if dest.exists():  # pragma: no cover - appeared in the last microseconds
                raise _refuse(dest)
            os.rename(tmp, dest)
    elif _renameat2(tmp, dest, _RENAME_EXCHANGE):
        _remove(tmp)  # now holds the old content
    else:
        old = dest.parent / f".{dest.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(dest, old)
        os.rename(tmp, dest)
        _remove(old)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temp_pid(path: Path) -> int | None:
    """The writer pid of an :func:`atomic_directory` temporary (``.<name>.tmp-<pid>-<hex>``), else None."""
    m = _TEMP_RE.match(path.name)
    return int(m["pid"]) if m else None


def is_stale_temp(path: Path) -> bool:
    """True for a real directory named like an :func:`atomic_directory` temporary whose writer is gone."""
    pid = stale_temp_pid(path)
    return pid is not None and path.is_dir() and not path.is_symlink() and not _pid_alive(pid)


def clean_stale_temps(parent: str | Path, name: str | None = None) -> list[Path]:
    """Delete the hidden temp dirs that :func:`atomic_directory` left behind in ``parent``.

    Only ``.<name>.tmp-<pid>-<hex>`` / ``.<name>.old-<pid>-<hex>`` directories whose pid is not a
    live process on this machine are removed (do not run it on a directory that another machine
    writes to over a network file system: its pids mean nothing here).

    Args:
        parent: the directory that holds the destinations.
        name: only the temporaries of this destination name (default: all of them).

    Returns:
        The paths removed.
    """
    parent = Path(parent)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.iterdir()):
        m = _TEMP_RE.match(entry.name)
        if m and (name is None or m["name"] == name) and is_stale_temp(entry):
            _remove(entry)
            removed.append(entry)
    return removed
