"""Reading downloaded archives without tools: .deb versions and members, file hashes."""

from __future__ import annotations

import hashlib
import io
import lzma
import tarfile
import zlib
from pathlib import Path

from lmbricks.errors import FetchError


def deb_version(deb: Path) -> str:
    """The version in a .deb's file name (``name_version_arch.deb``; ``%3a`` is an epoch colon)."""
    parts = deb.name.split("_")
    return parts[1].replace("%3a", ":") if len(parts) >= 3 else "unknown"


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


def extract_deb_data(deb: Path, dest: Path) -> None:
    """Unpack a .deb's ``data.tar`` (plain, .gz or .xz) into ``dest`` with Python: regular files and folders only."""
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
            tar.extractall(dest, members=[m for m in safe if not Path(m.name).is_absolute() and ".." not in m.name])


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
