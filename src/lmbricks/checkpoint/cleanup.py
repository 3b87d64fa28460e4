"""Find and remove the temporaries that killed writers left behind (``lmbricks clean``).

A write killed by SIGKILL, a power cut or an out-of-memory kill leaves a hidden
``.<name>.tmp-<pid>-<hex>`` (or ``.<name>.old-<pid>-<hex>``) directory beside its destination. It is
stale once no process with that pid is alive on this machine; a live writer's temporary is never
touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lmbricks.checkpoint.atomic import _remove, is_stale_temp, stale_temp_pid

#: How deep ``lmbricks clean`` looks below each directory by default: enough for
#: ``runs/<run>/checkpoints/.step-*.tmp-*`` and ``$LMBRICKS_HOME/models/.<name>.tmp-*``.
DEFAULT_DEPTH = 4

#: Folders never searched (version control, virtual environments, caches of other tools).
_SKIP = {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}


@dataclass(frozen=True)
class StaleTemp:
    """A stale temporary: its path, the pid of the writer that is gone, and its size in bytes."""

    path: Path
    pid: int
    bytes: int


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links are not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += st.st_size
    return total


def _walk(root: Path, depth: int) -> Iterator[Path]:
    """Stale temporaries at most ``depth`` levels below ``root`` (not descending into them)."""
    try:
        entries = sorted(root.iterdir())
    except OSError:  # unreadable or vanished: nothing of ours can be cleaned there
        return
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir():
            continue
        if stale_temp_pid(entry) is not None:
            if is_stale_temp(entry):
                yield entry
            continue  # a live writer's temporary, or just gone: never look inside
        if depth > 1 and entry.name not in _SKIP:
            yield from _walk(entry, depth - 1)


def find_stale_temps(roots: Iterable[str | Path], depth: int = DEFAULT_DEPTH) -> list[StaleTemp]:
    """The stale temporaries under each root, to ``depth`` levels of directories below it.

    Args:
        roots: directories to search (missing ones are skipped).
        depth: 1 looks only at the roots' own entries.

    Returns:
        One :class:`StaleTemp` per temporary, each listed once, in path order.
    """
    seen: dict[Path, StaleTemp] = {}
    for root in roots:
        root = Path(root).expanduser().absolute()
        if not root.is_dir():
            continue
        for path in _walk(root, depth):
            pid = stale_temp_pid(path)
            assert pid is not None
            seen.setdefault(path.resolve(), StaleTemp(path, pid, tree_bytes(path)))
    return sorted(seen.values(), key=lambda s: str(s.path))


def remove_stale_temps(found: Iterable[StaleTemp]) -> list[StaleTemp]:
    """Delete each temporary that is still stale (its writer could not come back, but check again).

    Returns:
        The temporaries removed.
    """
    removed = []
    for stale in found:
        if is_stale_temp(stale.path):
            _remove(stale.path)
            removed.append(stale)
    return removed
