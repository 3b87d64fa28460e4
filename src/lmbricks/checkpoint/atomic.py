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

from lmbricks.errors import ConfigError

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


@contextmanager
def atomic_directory(dest: str | Path, force: bool = False) -> Iterator[Path]:
    """Build a directory in a hidden temp dir beside ``dest``, then rename it into place.

    On normal exit every file and directory is fsynced and the temp dir is renamed to ``dest``;
    with ``force`` an existing ``dest`` is swapped out (atomically with Linux ``renameat2``
    ``RENAME_EXCHANGE``, otherwise moved aside first) and then deleted. If the block raises, the
    temp dir is deleted. If the process is killed, ``dest`` is unchanged and a hidden
    ``.<name>.tmp-<pid>-<hex>`` directory may remain: see :func:`clean_stale_temps`.

    Args:
        dest: the directory to create.
        force: replace ``dest`` if it exists.

    Yields:
        The temporary directory to write into.

    Raises:
        ConfigError: ``dest`` exists and ``force`` is false (raised before anything is created).
    """
    dest = Path(dest).expanduser().absolute()
    if not force and (dest.exists() or dest.is_symlink()):
        raise _refuse(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _hidden_sibling(dest, "tmp")
    try:
        yield tmp
        fsync_tree(tmp)
        if not (dest.exists() or dest.is_symlink()):
            if not _renameat2(tmp, dest, _RENAME_NOREPLACE):
                if dest.exists():  # pragma: no cover - appeared in the last microseconds
                    raise _refuse(dest)
                os.rename(tmp, dest)
        elif not force:
            raise _refuse(dest)  # appeared while we were writing
        elif _renameat2(tmp, dest, _RENAME_EXCHANGE):
            _remove(tmp)  # now holds the old content
        else:
            old = dest.parent / f".{dest.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(dest, old)
            os.rename(tmp, dest)
            _remove(old)
        _fsync_path(dest.parent, directory=True)
    except BaseException:
        _remove(tmp)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temps(parent: str | Path) -> list[Path]:
    """Delete the hidden temp dirs that :func:`atomic_directory` left behind in ``parent``.

    Only ``.<name>.tmp-<pid>-<hex>`` / ``.<name>.old-<pid>-<hex>`` entries whose pid is not a live
    process on this machine are removed (do not run it on a directory that another machine writes
    to over a network file system: its pids mean nothing here).

    Args:
        parent: the directory that holds the destinations.

    Returns:
        The paths removed.
    """
    parent = Path(parent)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.iterdir()):
        m = _TEMP_RE.match(entry.name)
        if m and not _pid_alive(int(m["pid"])):
            _remove(entry)
            removed.append(entry)
    return removed
