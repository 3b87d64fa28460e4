"""Registry downloads without network: cache reuse, the missing-apt error, and .deb unpacking."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lmbricks.data import download
from lmbricks.data.archive import ar_members, deb_version
from lmbricks.data.download import extract_deb, pip_download
from lmbricks.errors import FetchError


def _build_deb(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: lmb-test\nVersion: 1:2.0-1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n"
    )
    (root / "usr/share/doc/lmb").mkdir(parents=True)
    (root / "usr/share/doc/lmb/hello.txt").write_text("hello 世界\n", encoding="utf-8")
    (root / "usr/share/doc/lmb/link.txt").symlink_to("/etc/passwd")
    deb = tmp_path / "lmb-test_1%3a2.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "-Zxz", str(root), str(deb)], check=True, capture_output=True)
    return deb


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")


@needs_dpkg
def test_extract_deb_with_dpkg_and_with_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deb = _build_deb(tmp_path)
    assert deb_version(deb) == "1:2.0-1"
    out = extract_deb(deb, tmp_path / "x1")
    assert (out / "usr/share/doc/lmb/hello.txt").read_text(encoding="utf-8") == "hello 世界\n"
    # the pure-Python path (no dpkg-deb) gives the same regular files and skips links
    monkeypatch.setattr(download.shutil, "which", lambda _name: None)
    out2 = extract_deb(deb, tmp_path / "x2")
    assert (out2 / "usr/share/doc/lmb/hello.txt").read_bytes() == (out / "usr/share/doc/lmb/hello.txt").read_bytes()
    assert not (out2 / "usr/share/doc/lmb/link.txt").exists()
    assert "control.tar.xz" in ar_members(deb.read_bytes()) or "control.tar.gz" in ar_members(deb.read_bytes())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch folders left


def test_ar_rejects_non_archives() -> None:
    with pytest.raises(FetchError, match="ar archive"):
        ar_members(b"PK\x03\x04 not a deb")


def test_pip_download_reuses_a_cached_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = tmp_path / "champ_dataset-1.0.0-py3-none-any.whl"
    wheel.write_bytes(b"cached")
    monkeypatch.setattr(download, "_run", lambda *_a, **_k: pytest.fail("must not call pip"))
    assert pip_download("champ-dataset", "1.0.0", dest=tmp_path) == wheel


def test_missing_apt_names_package_and_points_to_add(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "have_apt", lambda: False)
    with pytest.raises(FetchError, match=r"pari-doc.*lmbricks data add"):
        download.apt_download("pari-doc", dest=tmp_path)


@pytest.mark.usefixtures("tmp_home")
def test_fetch_domain_without_apt_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbricks.data import fetch, fetch_domain

    monkeypatch.setattr(fetch, "have_apt", lambda: False)
    with pytest.raises(FetchError, match=r"libpython3.11-stdlib.*apt-get is missing.*data add code"):
        fetch_domain("code", tokenizer=None)


def test_failed_pip_download_is_one_line_naming_the_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Proc:
        returncode = 1
        stdout = ""
        stderr = "ERROR: Could not find a version that satisfies the requirement\n"

    monkeypatch.setattr(download, "_run", lambda *_a, **_k: Proc())
    with pytest.raises(FetchError) as info:
        pip_download("chatterbot-corpus", "1.3.3", dest=tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and "chatterbot-corpus==1.3.3" in msg and "pip download --no-deps" in msg
