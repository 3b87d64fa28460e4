"""``lmbricks clean``: remove the hidden temporaries that killed writes left behind."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from lmbricks.cli.common import console, print_json, user_errors
from lmbricks.cli.options import json_option


def _default_roots() -> list[Path]:
    home = Path(os.environ.get("LMBRICKS_HOME", Path.home() / ".cache" / "lmbricks")).expanduser()
    return [Path.cwd(), home]


def _size(n: int) -> str:
    for div, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _say(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True, markup=False)  # paths stay whole and copyable


@user_errors
def clean(
    dirs: list[Path] = typer.Argument(
        None, help="Directories to search (default: the current directory and $LMBRICKS_HOME)."
    ),
    depth: int = typer.Option(4, "--depth", min=1, help="Levels of folders searched below each directory."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed, remove nothing."),
    as_json: bool = json_option("Print JSON."),
) -> None:
    """Remove stale temporaries (.NAME.tmp-PID-*) of writes that were killed: their process is gone.

    A running writer's temporary is never touched. Pids are this machine's: not for network shares.

    Example: lmbricks clean runs ~/.cache/lmbricks --dry-run
    """
    from lmbricks.checkpoint import find_stale_temps, remove_stale_temps
    from lmbricks.errors import ConfigError

    roots = list(dirs) if dirs else _default_roots()
    for root in dirs or []:
        if not root.is_dir():
            raise ConfigError(f"{root}: not a directory")
    found = find_stale_temps(roots, depth=depth)
    removed = found if dry_run else remove_stale_temps(found)
    freed = sum(s.bytes for s in removed)
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                "removed": [{"path": str(s.path), "pid": s.pid, "bytes": s.bytes} for s in removed],
                "bytes_freed": 0 if dry_run else freed,
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    for s in removed:
        _say(f"{verb} {s.path} ({_size(s.bytes)}, writer pid {s.pid} is gone)")
    where = ", ".join(str(r) for r in roots)
    if dry_run:
        _say(f"{len(removed)} stale temporaries ({_size(freed)}) under {where}")
    else:
        _say(f"{len(removed)} stale temporaries removed, {_size(freed)} freed under {where}")
