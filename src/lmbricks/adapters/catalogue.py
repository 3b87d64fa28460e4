"""The brick catalogue: bricks registered per base model, and where to find them by name.

Plugged bricks are copied into ``paths.home()/bricks/<base name>/<brick name>/`` (atomically, after
checking that the brick was trained on that base: same content hash). The bricks shipped in a source
checkout (``bricks/<base name>/<domain>/`` at the repository root) are listed too, as ``shipped``;
they can be used by name but not unplugged.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmbricks.paths as paths
from lmbricks.adapters.base import BaseModel, base_model, check_brick_base
from lmbricks.adapters.brick import ADAPTER_CONFIG, BrickInfo, read_brick
from lmbricks.checkpoint import atomic_directory
from lmbricks.errors import ConfigError, UnknownNameError


def catalogue_dir(base_name: str) -> Path:
    """Where plugged bricks of ``base_name`` live (not created)."""
    return paths.home() / "bricks" / base_name


def shipped_root() -> Path | None:
    """The repository's ``bricks/`` folder ($LMBRICKS_BRICKS overrides), or None when not present."""
    env = os.environ.get("LMBRICKS_BRICKS")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "bricks"
    return root if root.is_dir() else None


@dataclass(frozen=True)
class Entry:
    """A catalogue entry: the brick and where it comes from (``plugged`` or ``shipped``)."""

    brick: BrickInfo
    source: str

    def row(self) -> dict[str, Any]:
        return {**self.brick.summary(), "source": self.source}


def _entries_in(folder: Path, source: str) -> list[Entry]:
    if not folder.is_dir():
        return []
    out = []
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and not sub.name.startswith(".") and (sub / ADAPTER_CONFIG).is_file():
            out.append(Entry(read_brick(sub), source))
    return out


def list_bricks(model_ref: str | Path | None = None) -> list[Entry]:
    """Every catalogued brick, of one base model or of all.

    Args:
        model_ref: a base model reference; None lists the bricks of every base.

    Returns:
        Plugged bricks first, then shipped ones, each group by name.
    """
    if model_ref is not None:
        names = [base_model(model_ref).name]
    else:
        plugged = paths.home() / "bricks"
        names = sorted({p.name for p in plugged.iterdir() if p.is_dir()} if plugged.is_dir() else set())
        root = shipped_root()
        if root is not None:
            names = sorted(set(names) | {p.name for p in root.iterdir() if p.is_dir()})
    entries: list[Entry] = []
    for name in names:
        entries += _entries_in(catalogue_dir(name), "plugged")
        root = shipped_root()
        if root is not None:
            entries += _entries_in(root / name, "shipped")
    return entries


def plug(brick: str | Path, model_ref: str | Path, name: str | None = None, force: bool = False) -> Entry:
    """Register a brick for a base model (copy it into the catalogue).

    Args:
        brick: brick directory.
        model_ref: the base model it is plugged into.
        name: catalogue name (default: the brick's recorded name).
        force: replace an entry of the same name.

    Returns:
        The new catalogue entry.

    Raises:
        ConfigError: the brick was trained on another base, or the name is taken.
    """
    info = read_brick(brick)
    base = base_model(model_ref)
    check_brick_base(info.name, info.base_sha256, info.base_model, base, info.base_identity)
    _check_shapes(info, base)
    entry_name = name or info.name
    if "/" in entry_name or entry_name.startswith("."):
        raise ConfigError(f"brick name {entry_name!r}: use a plain name without '/' or a leading dot")
    dest = catalogue_dir(base.name) / entry_name
    # catalogue entries are lmbricks' own copies: marked by their adapter config, never the brick itself
    with atomic_directory(dest, force=force, inputs={"brick": info.path}, marker=ADAPTER_CONFIG) as tmp:
        for item in sorted(info.path.iterdir()):
            if item.is_file():
                shutil.copyfile(item, tmp / item.name)
    return Entry(read_brick(dest), "plugged")


def _check_shapes(info: BrickInfo, base: BaseModel) -> None:
    """A foreign adapter (no recorded hash) must at least fit the base's module shapes."""
    if info.base_sha256 is not None:
        return
    from lmbricks.adapters.brick import load_factors
    from lmbricks.checkpoint import CheckpointReader

    reader = CheckpointReader(base.path)
    for module, pair in load_factors(info.path).items():
        key = f"{module}.weight"
        if key not in reader:
            raise ConfigError(f"brick {info.name!r} adapts {module}, which {base.name} does not have")
        shape = tuple(reader.info(key).shape)
        if shape != (pair.B.shape[0], pair.A.shape[1]):
            raise ConfigError(
                f"brick {info.name!r}: {module} is {pair.B.shape[0]}x{pair.A.shape[1]} in the brick "
                f"but {shape[0]}x{shape[1]} in {base.name}"
            )


def unplug(name: str, model_ref: str | Path) -> Path:
    """Remove a plugged brick from a base model's catalogue.

    Returns:
        The directory removed.

    Raises:
        UnknownNameError: no plugged brick of that name (shipped bricks cannot be unplugged).
    """
    base = base_model(model_ref)
    dest = catalogue_dir(base.name) / name
    if not (dest / ADAPTER_CONFIG).is_file():
        known = ", ".join(e.brick.path.name for e in _entries_in(catalogue_dir(base.name), "plugged")) or "none"
        raise UnknownNameError(f"no plugged brick {name!r} for {base.name} (plugged: {known})")
    shutil.rmtree(dest)
    return dest


def find_brick(ref: str | Path, model_ref: str | Path | None = None) -> Path:
    """Resolve a brick reference: a brick directory, or a catalogue name of the base model.

    Names match a plugged entry's directory, a shipped entry's directory (its domain, e.g. ``zh``)
    or a brick's recorded name (``smollm2-zh``).

    Raises:
        UnknownNameError: nothing matches.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        read_brick(path)
        return path
    text = str(ref)
    entries = list_bricks(model_ref) if model_ref is not None else list_bricks()
    for entry in entries:
        if text in (entry.brick.path.name, entry.brick.name):
            return entry.brick.path
    known = ", ".join(sorted({e.brick.name for e in entries})) or "none"
    raise UnknownNameError(f"no brick {text!r}: not a directory nor a catalogued name (known: {known})")
