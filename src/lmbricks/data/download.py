"""Downloading registry packages (Debian .debs, PyPI wheels) into the cache, and unpacking .debs.

Nothing is installed: ``apt-get download`` and ``pip download --no-deps`` only fetch the archive,
which is kept in :func:`lmbricks.paths.downloads_dir` so a second fetch needs no network.
"""

from __future__ import annotations

import io
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

from lmbricks import paths
from lmbricks.errors import FetchError


def have_apt() -> bool:
    """Whether ``apt-get`` exists here (Debian and Ubuntu; not macOS or Windows)."""
    return shutil.which("apt-get") is not None


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"exit code {proc.returncode}"


def _cached_deb(name: str, folder: Path) -> Path | None:
    found = sorted(folder.glob(f"{name}_*.deb"))
    return found[-1] if found else None


def apt_download(name: str, dest: Path | None = None) -> Path:
    """Fetch the .deb of a Debian package (``apt-get download``), reusing an earlier download.

    Args:
        name: the Debian package name.
        dest: the folder to keep it in (default: ``downloads_dir()/debian``).

    Returns:
        The path of the ``.deb``.

    Raises:
        FetchError: ``apt-get`` is missing, or the download failed (the message names the package
            and the command to retry).
    """
    folder = dest or paths.downloads_dir() / "debian"
    folder.mkdir(parents=True, exist_ok=True)
    cached = _cached_deb(name, folder)
    if cached is not None:
        return cached
    if not have_apt():
        raise FetchError(
            f"Debian package {name!r} needs apt-get, which this system lacks (macOS/Windows); "
            "add your own text instead with `lmbricks data add NAME FILE...`"
        )
    # Download into a scratch folder first so a half-written .deb is never mistaken for a cached one.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".apt-") as tmp:
        proc = _run(["apt-get", "download", name], Path(tmp))
        if proc.returncode != 0 and _lists_empty(proc) and _is_root():
            _run(["apt-get", "update"], Path(tmp))  # a fresh machine has no package lists yet
            proc = _run(["apt-get", "download", name], Path(tmp))
        got = sorted(Path(tmp).glob(f"{name}_*.deb"))
        if proc.returncode != 0 or not got:
            raise FetchError(
                f"could not download Debian package {name!r} ({_last_line(proc)}); "
                f"retry with `apt-get download {name}` (after `apt-get update`) or `lmbricks data fetch`"
            )
        final = folder / got[0].name
        os.replace(got[0], final)
    return final


def _lists_empty(proc: subprocess.CompletedProcess[str]) -> bool:
    text = proc.stderr + proc.stdout
    return "Unable to locate package" in text or "has no installation candidate" in text


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _cached_dist(name: str, version: str, folder: Path) -> Path | None:
    stem = f"{_norm(name)}-{version}"
    for path in sorted(folder.iterdir()):
        if (
            path.is_file()
            and _norm(path.name).startswith(_norm(stem))
            and path.suffix in (".whl", ".gz", ".zip")
        ):
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
    with tempfile.TemporaryDirectory(dir=folder, prefix=".pip-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            f"{name}=={version}",
            "-d",
            tmp,
        ]
        proc = _run(cmd, Path(tmp))
        got = [p for p in Path(tmp).iterdir() if p.is_file()]
        if proc.returncode != 0 or not got:
            raise FetchError(
                f"could not download PyPI package {name}=={version} ({_last_line(proc)}); "
                f"retry with `{Path(sys.executable).name} -m pip download --no-deps {name}=={version}`"
            )
        final = folder / got[0].name
        os.replace(got[0], final)
    return final


def deb_version(deb: Path) -> str:
    """The version in a .deb's file name (``name_version_arch.deb``; ``%3a`` is an epoch colon)."""
    parts = deb.name.split("_")
    return parts[1].replace("%3a", ":") if len(parts) >= 3 else "unknown"


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
                raise FetchError(
                    f"dpkg-deb could not unpack {deb} ({_last_line(proc)}); delete it and fetch again"
                )
        else:
            _extract_deb_python(deb, tmp)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def ar_members(blob: bytes) -> dict[str, bytes]:
    """The members of a Unix ``ar`` archive (the container format of a .deb), by name."""
    if not blob.startswith(b"!<arch>\n"):
        raise FetchError("not an ar archive (a .deb starts with '!<arch>')")
    out: dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        out[name] = blob[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)  # members are padded to an even offset
    return out


def _extract_deb_python(deb: Path, dest: Path) -> None:
    members = ar_members(deb.read_bytes())
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise FetchError(f"{deb} has no data.tar member")
    raw = members[data_name]
    if data_name.endswith(".xz"):
        raw = lzma.decompress(raw)
    elif data_name.endswith(".gz"):
        raw = zlib.decompress(raw, 16 + zlib.MAX_WBITS)
    elif not data_name.endswith(".tar"):
        raise FetchError(f"{deb}: {data_name} uses a compression Python cannot read; install dpkg-deb")
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        # Regular files and folders only: links may point outside dest (absolute /usr/... targets).
        safe = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=safe, filter="data")
        else:  # Python < 3.10.12 has no extraction filters
            tar.extractall(
                dest, members=[m for m in safe if not Path(m.name).is_absolute() and ".." not in m.name]
            )


def fetch_package(name: str, registry: str, version: str | None) -> tuple[Path, str]:
    """Download one package and make it readable: an extracted folder for a .deb, the file for PyPI.

    Args:
        name: the package name.
        registry: ``"debian"`` or ``"pypi"``.
        version: the pinned version (required for PyPI).

    Returns:
        The path to read and the version actually fetched.
    """
    if registry == "debian":
        deb = apt_download(name)
        root = extract_deb(deb, paths.downloads_dir() / "debian" / "extracted" / deb.stem)
        return root, deb_version(deb)
    if version is None:
        raise FetchError(f"PyPI package {name!r} needs a pinned version")
    return pip_download(name, version), version
