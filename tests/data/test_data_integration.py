"""Fetch every built-in domain from the registries (real cache) and check its size and character."""

from __future__ import annotations

import re
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
