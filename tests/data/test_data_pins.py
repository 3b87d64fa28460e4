"""Pinned source versions: the pin-or-current decision, the one-line note, and what the manifest records.

No network: the decision is a pure function, and the apt and registry calls are replaced by fakes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lmbricks.data import corpus, download, fetch
from lmbricks.data.document import Document, Package
from lmbricks.data.download import DebChoice, Fetched, choose_deb_version, parse_madison
from lmbricks.data.registry import DOMAINS, DomainSpec
from lmbricks.errors import FetchError

PKG = "libpython3.11-stdlib"
U5, U6, U9 = "3.11.2-6+deb12u5", "3.11.2-6+deb12u6", "3.11.2-6+deb12u9"


# ----------------------------------------------------------------------------- the decision


def test_the_pin_is_used_when_cached_or_served() -> None:
    assert choose_deb_version(PKG, U5, served=[U6, U5], cached=[U5]) == DebChoice(U5, cached=True)
    assert choose_deb_version(PKG, U5, served=[U6, U5], cached=[U6]) == DebChoice(U5, cached=False)


def test_a_moved_on_archive_gives_the_current_version_and_one_line() -> None:
    choice = choose_deb_version(PKG, U5, served=[U9, U6], cached=[])
    assert choice == DebChoice(U9, False, f"note: {PKG} {U5} is no longer served; using {U9}")
    assert "\n" not in str(choice.note)
    # An earlier download of the current version is reused (still with the note: it is not the pin).
    assert choose_deb_version(PKG, U5, served=[U6], cached=[U6]) == DebChoice(U6, True, choice.note.replace(U9, U6))


def test_stale_lists_are_named_in_the_note() -> None:
    note = choose_deb_version(PKG, U9, served=[U6], cached=[], lists_refreshed=False).note
    assert note is not None and note.startswith(f"note: {PKG} {U9} is no longer served; using {U6}")
    assert "apt-get update" in note


def test_without_package_lists_the_newest_download_is_used() -> None:
    choice = choose_deb_version(PKG, U9, served=[], cached=[U5, U6])
    assert (choice.version, choice.cached) == (U6, True) and choice.note is not None and U9 in choice.note
    assert choose_deb_version(PKG, U9, served=[], cached=[]) == DebChoice(None, False)


def test_no_pin_takes_the_current_version_without_a_note() -> None:
    assert choose_deb_version(PKG, None, served=[U9, U6], cached=[]) == DebChoice(U9, False)


def test_parse_madison_keeps_binary_versions_in_order() -> None:
    out = (
        f"{PKG} | {U9} | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n"
        f"{PKG} | 3.11.2-6+deb12u8 | http://deb.debian.org/debian bookworm/main amd64 Packages\n"
        f"{PKG} | 3.11.2-6+deb12u8 | http://deb.debian.org/debian bookworm/main i386 Packages\n"
        f"   python3.11 | {U9} | http://deb.debian.org/debian-security bookworm-security/main Sources\n"
    )
    assert parse_madison(out, PKG) == [U9, "3.11.2-6+deb12u8"]
    assert parse_madison("", PKG) == []


# ----------------------------------------------------------------------------- apt_download with fakes


class _Apt:
    """Stands in for apt: lists name ``listed`` (``after_update`` once updated); ``archive`` has the files."""

    def __init__(self, listed: list[str], archive: list[str] | None = None, after_update: list[str] | None = None):
        self.listed, self.after_update = listed, after_update
        self.archive = listed if archive is None else archive
        self.calls: list[list[str]] = []

    def madison(self, _name: str) -> list[str]:
        return list(self.listed)

    def run(self, cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        self.calls.append(cmd)
        if cmd[:2] == ["apt-get", "update"] and self.after_update is not None:
            self.listed = self.after_update
        if cmd[:2] == ["apt-get", "download"]:
            name, _, version = cmd[2].partition("=")
            if version not in self.archive:
                return subprocess.CompletedProcess(cmd, 100, "", f"E: Failed to fetch {name} {version}  404  Not Found")
            (cwd / f"{name}_{version.replace(':', '%3a')}_amd64.deb").write_bytes(f"deb {version}".encode())
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.fixture
def fake_apt(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(apt: _Apt, root: bool = True) -> _Apt:
        monkeypatch.setattr(download, "have_apt", lambda: True)
        monkeypatch.setattr(download, "_is_root", lambda: root)
        monkeypatch.setattr(download, "apt_versions", apt.madison)
        monkeypatch.setattr(download, "_run", apt.run)
        monkeypatch.setattr(download, "_LISTS", {"tried": False, "fresh": False})
        return apt

    return install


def test_apt_download_asks_for_the_pin_exactly(tmp_path: Path, fake_apt: Any) -> None:
    apt = fake_apt(_Apt([U6, U5]))
    deb, note = download.apt_download(PKG, U5, dest=tmp_path)
    assert deb.name == f"{PKG}_{U5}_amd64.deb" and note is None
    assert ["apt-get", "download", f"{PKG}={U5}"] in apt.calls and ["apt-get", "update"] not in apt.calls


def test_apt_download_falls_back_once_then_reuses_the_download(tmp_path: Path, fake_apt: Any) -> None:
    apt = fake_apt(_Apt([U9]))
    deb, note = download.apt_download(PKG, U5, dest=tmp_path)
    assert deb.name == f"{PKG}_{U9}_amd64.deb" and note == f"note: {PKG} {U5} is no longer served; using {U9}"
    assert apt.calls.count(["apt-get", "update"]) == 1  # the lists were refreshed before giving up on the pin
    assert deb.read_bytes() == f"deb {U9}".encode()
    apt.calls.clear()
    again, note2 = download.apt_download(PKG, U5, dest=tmp_path)
    assert again == deb and note2 is not None and U9 in note2 and apt.calls == []  # no network the second time


def test_refreshed_lists_can_bring_the_pin_back(tmp_path: Path, fake_apt: Any) -> None:
    apt = fake_apt(_Apt([], archive=[U9, U6], after_update=[U9, U6]))  # a fresh machine: empty lists
    deb, note = download.apt_download(PKG, U9, dest=tmp_path)
    assert deb.name == f"{PKG}_{U9}_amd64.deb" and note is None and apt.calls[0] == ["apt-get", "update"]


def test_failed_download_names_the_exact_spec(tmp_path: Path, fake_apt: Any) -> None:
    apt = fake_apt(_Apt([U9], archive=[]), root=False)  # stale lists name a file the archive dropped
    with pytest.raises(FetchError) as info:
        download.apt_download(PKG, U9, dest=tmp_path)
    assert f"apt-get download {PKG}={U9}" in str(info.value) and "\n" not in str(info.value)
    assert ["apt-get", "update"] not in apt.calls  # not root: no refresh, one attempt


def test_a_dropped_file_is_retried_after_refreshing_the_lists(tmp_path: Path, fake_apt: Any) -> None:
    apt = fake_apt(_Apt([U6], archive=[U9], after_update=[U9]))  # lists name U6, which the archive dropped
    deb, note = download.apt_download(PKG, U6, dest=tmp_path)
    assert deb.name == f"{PKG}_{U9}_amd64.deb" and note == f"note: {PKG} {U6} is no longer served; using {U9}"
    assert apt.calls.count(["apt-get", "update"]) == 1


# ----------------------------------------------------------------------------- what is recorded


def test_fetch_package_records_version_and_sha256(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = tmp_home / "downloads" / "pypi" / "champ_dataset-1.0.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"a cached wheel")
    monkeypatch.setattr(download, "_run", lambda *_a, **_k: pytest.fail("must not call pip"))
    got = download.fetch_package("champ-dataset", "pypi", "1.0.0")
    assert got.record() == {
        "version": "1.0.0",
        "pinned_version": "1.0.0",
        "file": wheel.name,
        "sha256": hashlib.sha256(b"a cached wheel").hexdigest(),
        "note": None,
    }


def _fake_domain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A built-in-like domain ``fake`` whose one Debian source has moved on from its pin."""
    archive = tmp_path / f"fake-pkg_{U9}_all.deb"
    archive.write_bytes(b"the downloaded archive")

    def read(_: Path) -> Iterator[Document]:
        for i in range(30):
            yield Document(id=f"fake-pkg:{i}", text=f"document {i} " * 40, source="fake-pkg")

    spec = DomainSpec("fake", "a fake domain", (Package("fake-pkg", "debian", U5, "MIT", read),), "MIT")
    monkeypatch.setitem(DOMAINS, "fake", spec)
    monkeypatch.setattr(fetch, "have_apt", lambda: True)
    note = f"note: fake-pkg {U5} is no longer served; using {U9}"
    fetched = Fetched(tmp_path, archive, U9, U5, hashlib.sha256(archive.read_bytes()).hexdigest(), note)
    monkeypatch.setattr(fetch, "fetch_package", lambda _name, _registry, _version: fetched)
    return note


def test_manifest_records_each_source_and_the_note_is_said(
    tmp_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    note = _fake_domain(monkeypatch, tmp_path)
    said: list[str] = []
    fetch.fetch_domain("fake", tokenizer=None, note=said.append)
    assert said == [note]
    (source,) = json.loads((tmp_home / "data" / "fake" / "manifest.json").read_text())["sources"]
    assert source["package"] == "fake-pkg" and source["version"] == U9 and source["pinned_version"] == U5
    assert source["file"] == f"fake-pkg_{U9}_all.deb" and source["note"] == note
    assert source["sha256"] == hashlib.sha256(b"the downloaded archive").hexdigest()


@pytest.mark.usefixtures("tmp_home")
def test_the_note_goes_to_stderr_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    note = _fake_domain(monkeypatch, tmp_path)
    fetch.fetch_domain("fake", tokenizer=None)
    assert capsys.readouterr().err.strip() == note


@pytest.mark.usefixtures("tmp_home")
def test_data_sources_shows_pins_and_what_was_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbricks.cli.data import app

    note = _fake_domain(monkeypatch, tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["sources", "code", "fake", "--json"])
    assert res.exit_code == 0, res.output
    code, fake = json.loads(res.output)
    # Not fetched: the registry's pins only.
    assert code["cached"] is False and code["sources"][0]["version"] is None
    assert code["sources"][0]["pinned_version"] == DOMAINS["code"].sources[0].version
    fetch.fetch_domain("fake", tokenizer=None, note=lambda _: None)
    res = runner.invoke(app, ["sources", "fake", "--json"])
    (fake,) = json.loads(res.output)
    src = fake["sources"][0]
    assert fake["cached"] and (src["version"], src["pinned_version"], src["note"]) == (U9, U5, note)
    assert len(src["sha256"]) == 64
    listed = next(r for r in corpus.list_domains() if r["name"] == "fake")
    assert listed["sources"][0]["sha256"] == src["sha256"]
    table = runner.invoke(app, ["sources", "fake"])
    assert table.exit_code == 0 and src["sha256"][:12] in table.output
    assert runner.invoke(app, ["sources", "nope"]).exit_code == 2


def test_every_builtin_source_is_pinned() -> None:
    for spec in DOMAINS.values():
        for pkg in spec.sources:
            assert pkg.version, f"{spec.name}: {pkg.name} has no pinned version"
