"""Fetch every built-in domain from the registries (real cache) and check its size and character."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from lmbricks.data import domain_text, fetch_domain, load_texts, parallel_paragraphs
from lmbricks.data.download import have_apt
from lmbricks.data.registry import DOMAINS
from lmbricks.data.store import read_manifest

pytestmark = pytest.mark.integration

CJK = re.compile(r"[\u4e00-\u9fff]")
LOOKS_LIKE = {
    "en_prose": lambda t: " the " in t and "Elizabeth" in t or "Emma" in t,
    "code": lambda t: "def " in t and "import " in t,
    "math": lambda t: "Problem:" in t or "\\" in t,
    "zh": lambda t: len(CJK.findall(t)) > 0.3 * len(t.replace(" ", "")),
    "dialogue": lambda t: "User:" in t and "Assistant:" in t,
}


def _manifest(name: str) -> dict[str, Any]:
    if DOMAINS[name].needs_apt and not have_apt():
        pytest.skip("needs apt-get")
    fetch_domain(name)
    manifest = read_manifest(name)
    assert manifest is not None
    if manifest["tokenizer"] is None:  # cached before the default tokenizer was available
        fetch_domain(name, force=True)
        manifest = read_manifest(name)
        assert manifest is not None
    return manifest


@pytest.mark.parametrize("name", list(LOOKS_LIKE))
def test_main_domain_size_and_content(name: str) -> None:
    manifest = _manifest(name)
    splits = manifest["splits"]
    assert sum(s["tokens"] for s in splits.values()) >= 100_000
    assert splits["test"]["tokens"] >= 30_000 and splits["validation"]["tokens"] >= 20_000
    assert splits["test"]["bytes"] >= 12_000 and splits["validation"]["bytes"] >= 12_000
    text = domain_text(name, "test", max_bytes=200_000)
    assert LOOKS_LIKE[name](text), text[:300]
    assert all(src["version"] for src in manifest["sources"])


def test_multilingual_subdomains_align() -> None:
    manifest = _manifest("multilingual")
    assert {"en", "de", "fr", "ja"} <= set(manifest["subdomains"])
    assert len(CJK.findall(domain_text("multilingual/ja", "test"))) > 1000
    pairs = parallel_paragraphs("en", "de", split="train")
    assert len(pairs) > 500
    assert sum(a != b for a, b in pairs) == len(pairs)  # untranslated paragraphs were dropped
    whole = load_texts("multilingual", "test")
    assert len(whole) == sum(len(load_texts(f"multilingual/{s}", "test")) for s in manifest["subdomains"])


def test_real_fetch_records_the_version_and_sha256_of_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One small source (r-cran-janeaustenr, about 1.6 MB) fetched into a fresh, empty home."""
    from lmbricks.data.archive import deb_version, sha256_file

    if not have_apt():
        pytest.skip("needs apt-get")
    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))
    notes: list[str] = []
    fetch_domain("en_prose", tokenizer=None, note=notes.append)
    manifest = read_manifest("en_prose")
    assert manifest is not None
    (source,) = manifest["sources"]
    (deb,) = (tmp_path / "home" / "downloads" / "debian").glob("r-cran-janeaustenr_*.deb")
    assert source["file"] == deb.name and source["sha256"] == sha256_file(deb)
    assert source["version"] == deb_version(deb) == _control_version(deb)
    pin = DOMAINS["en_prose"].sources[0].version
    assert source["pinned_version"] == pin
    # Either the pin was served, or the archive moved on and the fetch said so in one line.
    if source["version"] == pin:
        assert notes == [] and source["note"] is None
    else:
        assert notes == [source["note"]] and f"{pin} is no longer served; using {source['version']}" in notes[0]


def _control_version(deb: Path) -> str:
    """The Version field of the .deb's control file (not its file name)."""
    import shutil
    import subprocess

    from lmbricks.data.archive import deb_version

    if shutil.which("dpkg-deb") is None:
        return deb_version(deb)
    proc = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True)
    return proc.stdout.strip()
