"""Check that the active environment is exactly what the lock (constraints.txt) pins.

Run by `make setup` after installing: a dependency added to pyproject.toml without `make lock`
would otherwise be installed at whatever version the registry serves that day.
Usage: python scripts/check_lock.py constraints.txt [constraints-mergekit.txt ...]
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a pip-compile lock."""
    out = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        m = _PIN.match(line.strip())
        if m:
            out[_norm(m[1])] = m[2]
    return out


def main(locks: list[str]) -> int:
    pinned: dict[str, str] = {}
    for lock in locks:
        pinned.update(pins(Path(lock)))
    problems = []
    for dist in metadata.distributions():
        name = _norm(dist.metadata["Name"])
        if name in ("lmbricks", "pip", "setuptools", "wheel"):
            continue
        want = pinned.get(name)
        if want is None:
            problems.append(f"{name}=={dist.version} is installed but not in the lock")
        elif want.split("+")[0] != dist.version.split("+")[0]:
            problems.append(f"{name}=={dist.version} is installed, the lock pins {want}")
    for p in problems:
        print(f"lock: {p}", file=sys.stderr)
    if problems:
        print("lock: run `make lock` after changing dependencies, then `make setup`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["constraints.txt"]))
