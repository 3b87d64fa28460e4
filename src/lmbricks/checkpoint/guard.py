"""The input guard: no command that writes a directory may modify, replace or delete one of its inputs.

Every writer calls :func:`check_output` before any work (and :func:`~lmbricks.checkpoint.atomic_directory`
calls it again just before the rename, as a last line of defence). The rules:

- the output is never an input, never contains an input, and never lies inside an input directory
  (paths are compared both as given and with symbolic links resolved);
- an existing output is refused unless ``force``; with ``force`` only a directory that lmbricks
  wrote itself is replaced (one that carries ``lmbricks.json``, or the marker file its writer names),
  never a regular file, a symbolic link or a directory of the user's;
- every existing parent of the output must be a directory.

Each refusal is a :class:`~lmbricks.errors.ConfigError` whose message names the path and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from lmbricks.checkpoint.provenance import PROVENANCE_FILE
from lmbricks.errors import ConfigError

#: What a caller may pass as inputs: paths (None entries are skipped), or label -> path.
Inputs = Iterable[str | Path | None] | Mapping[str, str | Path | None]


def _labelled(inputs: Inputs) -> list[tuple[str, Path]]:
    """``(label, absolute path)`` per input; the label names the input in messages."""
    items: Iterable[tuple[str | None, str | Path | None]]
    items = inputs.items() if isinstance(inputs, Mapping) else ((None, p) for p in inputs)
    found = []
    for label, p in items:
        if p is None or str(p) == "":
            continue
        path = Path(p).expanduser().absolute()
        found.append((f"the input {label!r} ({path})" if label else f"the input {path}", path))
    return found


def _within(child: Path, parent: Path) -> bool:
    """``child`` equals ``parent`` or lies somewhere below it (pure path comparison)."""
    return child == parent or parent in child.parents


def check_apart(dest: str | Path, inputs: Inputs = ()) -> Path:
    """Refuse a destination that is an input, contains one, or lies inside an input directory.

    Inputs that do not exist are skipped (what is not on disk cannot be lost). Each pair is compared
    as given (absolute) and with symbolic links resolved, so neither a link to an input nor a link
    inside the destination slips through.

    Args:
        dest: the directory a command is about to write.
        inputs: the paths the command reads (model directories, recipe and config files, adapters,
            data files), or a mapping label -> path.

    Returns:
        ``dest`` as an absolute path (symbolic links not resolved).

    Raises:
        ConfigError: naming ``dest``, the input and the relation.
    """
    dest_abs = Path(dest).expanduser().absolute()
    dest_real = dest_abs.resolve()
    for label, path in _labelled(inputs):
        if not (path.exists() or path.is_symlink()):
            continue
        real = path.resolve()
        for d, p in ((dest_abs, path), (dest_real, real), (dest_abs, real), (dest_real, path)):
            if d == p:
                raise ConfigError(f"{dest_abs} is {label}; write the output somewhere else")
        for d, p in ((dest_abs, path), (dest_real, real)):
            if _within(p, d):
                raise ConfigError(
                    f"{dest_abs} contains {label}; writing there could replace or delete it: "
                    "choose an output path that holds no input"
                )
        if real.is_dir():
            for d, p in ((dest_abs, path), (dest_real, real)):
                if _within(d, p):
                    raise ConfigError(
                        f"{dest_abs} lies inside {label}; outputs are never written into an input "
                        "directory: choose a path outside it"
                    )
    for parent in dest_abs.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{dest_abs}: its parent {parent} is not a directory")
            break
    return dest_abs


def owned_by_lmbricks(path: str | Path, marker: str = PROVENANCE_FILE) -> bool:
    """True when ``path`` is a real directory (not a link) holding the file ``marker``."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and (path / marker).is_file()


def check_replaceable(dest: str | Path, force: bool, marker: str = PROVENANCE_FILE) -> Path:
    """Refuse an existing ``dest`` unless ``force`` and it is a directory lmbricks wrote.

    Args:
        dest: the output path.
        force: the caller's ``--force``.
        marker: the file that marks a directory as written by lmbricks (``lmbricks.json``; the data
            store's domains carry ``manifest.json``, catalogue entries ``adapter_config.json``).

    Returns:
        ``dest`` as an absolute path.

    Raises:
        ConfigError: ``dest`` exists and may not be replaced, naming it and why.
    """
    dest = Path(dest).expanduser().absolute()
    if not (dest.exists() or dest.is_symlink()):
        return dest
    if not force:
        raise ConfigError(f"{dest} already exists; pass force=True (CLI: --force) to replace it")
    if dest.is_symlink():
        raise ConfigError(
            f"{dest} is a symbolic link; --force replaces only a directory that lmbricks wrote, "
            "never a link: remove it yourself or choose another output"
        )
    if not dest.is_dir():
        raise ConfigError(
            f"{dest} is a file; --force replaces only a directory that lmbricks wrote, never a file: "
            "choose another output"
        )
    if not (dest / marker).is_file():
        raise ConfigError(
            f"{dest} was not written by lmbricks (it has no {marker}); --force replaces only "
            "lmbricks outputs: delete it yourself or choose another output"
        )
    return dest


def check_output(dest: str | Path, inputs: Inputs = (), force: bool = False, *, marker: str = PROVENANCE_FILE) -> Path:
    """Validate an output path before any work: apart from every input, and replaceable if it exists.

    Call it at the start of a command, before loading models; :func:`atomic_directory` calls it again
    before it renames its result into place.

    Args:
        dest: the output directory.
        inputs: the paths the command reads, or a mapping label -> path (see :func:`check_apart`).
        force: replace an existing output (only one lmbricks wrote; see :func:`check_replaceable`).
        marker: the file that marks a replaceable output.

    Returns:
        ``dest`` as an absolute path.

    Raises:
        ConfigError: naming the path and why it is refused.

    Example:
        >>> check_output("runs/merged", inputs={"recipe": "recipe.yaml"}, force=True)  # doctest: +SKIP
    """
    check_apart(dest, inputs)
    return check_replaceable(dest, force, marker)
