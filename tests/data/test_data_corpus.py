"""add_domain round trip, manifests, reading back, listing, and the refusal rules (temporary cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmbricks import paths
from lmbricks.data import add_domain, count_tokens, domain_text, list_domains, load_records, load_texts
from lmbricks.errors import ConfigError, UnknownNameError
from lmbricks.testing import build_tiny_tokenizer


def _write_files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        path = folder / f"doc{i:03d}.txt"
        path.write_text(f"Document {i}. " + "Some words about topic {i}. " * (20 + i) + "é中", encoding="utf-8")
        files.append(path)
    return files


@pytest.mark.usefixtures("tmp_home")
def test_add_domain_round_trip_and_manifest(tmp_path: Path) -> None:
    files = _write_files(tmp_path / "in", 40)
    originals = {p.read_text(encoding="utf-8").strip() for p in files}
    tok = build_tiny_tokenizer()
    dest = add_domain("legal", files, tokenizer=tok, tokenizer_name="tiny")
    assert dest == paths.data_dir() / "legal"
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["domain"] == "legal" and manifest["tokenizer"] == "tiny"
    assert [s["package"] for s in manifest["sources"]] == [f"user:{p.name}" for p in files]
    seen: list[str] = []
    for split in ("train", "validation", "test"):
        texts = load_texts("legal", split)
        stats = manifest["splits"][split]
        assert stats["documents"] == len(texts) > 0
        assert stats["bytes"] == sum(len(t.encode("utf-8")) for t in texts)
        assert stats["tokens"] == count_tokens(tok, texts)
        seen += texts
    # every document lands in exactly one split, unchanged
    assert sorted(seen) == sorted(originals)
    assert all(r["source"].startswith("user:doc") for r in load_records("legal", "train"))
    # no scratch folders left beside the domain
    assert [p.name for p in paths.data_dir().iterdir()] == ["legal"]


@pytest.mark.usefixtures("tmp_home")
def test_same_files_give_the_same_split(tmp_path: Path) -> None:
    files = _write_files(tmp_path / "in", 30)
    add_domain("a", files, tokenizer=None)
    add_domain("b", list(reversed(files)), tokenizer=None)
    for split in ("train", "validation", "test"):
        assert sorted(load_texts("a", split)) == sorted(load_texts("b", split))
    manifest = json.loads((paths.data_dir() / "a" / "manifest.json").read_text())
    assert manifest["splits"]["test"]["tokens"] is None and "not counted" in manifest["tokens_note"]


@pytest.mark.usefixtures("tmp_home")
def test_one_file_is_cut_into_paragraphs(tmp_path: Path) -> None:
    paras = [f"Paragraph number {i} with a line\nthat continues." for i in range(12)]
    big = tmp_path / "big.txt"
    big.write_text("\n\n".join(paras) + "\n\n  \n", encoding="utf-8")
    add_domain("notes", [big], tokenizer=None)
    got = [t for s in ("train", "validation", "test") for t in load_texts("notes", s)]
    assert sorted(got) == sorted(paras)
    assert len(load_texts("notes", "test")) >= 1 and len(load_texts("notes", "validation")) >= 1


@pytest.mark.usefixtures("tmp_home")
def test_refusals(tmp_path: Path) -> None:
    files = _write_files(tmp_path / "in", 3)
    add_domain("mine", files, tokenizer=None)
    with pytest.raises(ConfigError, match="already cached"):
        add_domain("mine", files, tokenizer=None)
    add_domain("mine", files[:2], force=True, tokenizer=None)
    assert sum(len(load_texts("mine", s)) for s in ("train", "validation", "test")) == 2
    with pytest.raises(ConfigError, match="invalid"):
        add_domain("Bad Name", files, tokenizer=None)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        add_domain("enc", [bad], tokenizer=None)
    with pytest.raises(UnknownNameError, match="lmbricks data add"):
        load_texts("never-added")
    with pytest.raises(ConfigError, match="split"):
        load_texts("mine", "dev")


@pytest.mark.usefixtures("tmp_home")
def test_domain_text_prefix_cuts_at_a_character(tmp_path: Path) -> None:
    files = _write_files(tmp_path / "in", 5)
    add_domain("t", files, tokenizer=None)
    full = domain_text("t", "train")
    assert full == "\n\n".join(load_texts("t", "train"))
    cut = domain_text("t", "train", max_bytes=101)
    assert full.startswith(cut) and len(cut.encode("utf-8")) <= 101
    zh = tmp_path / "zh"
    zh.mkdir()
    (zh / "a.txt").write_text("中文" * 10, encoding="utf-8")
    (zh / "b.txt").write_text("中文" * 10, encoding="utf-8")
    add_domain("z", sorted(zh.iterdir()), tokenizer=None)
    assert domain_text("z", "train", max_bytes=4) == "中"  # 3 bytes per character: the 4th byte is dropped


@pytest.mark.usefixtures("tmp_home")
def test_list_domains_shows_builtins_and_added(tmp_path: Path) -> None:
    rows = {r["name"]: r for r in list_domains()}
    assert {"en_prose", "code", "math", "zh", "dialogue", "multilingual"} <= set(rows)
    assert not rows["code"]["cached"] and rows["code"]["needs_apt"] and not rows["dialogue"]["needs_apt"]
    add_domain("mine", _write_files(tmp_path / "in", 4), tokenizer=None)
    row = {r["name"]: r for r in list_domains()}["mine"]
    assert row["cached"] and row["bytes"] == sum(
        len(t.encode()) for s in ("train", "validation", "test") for t in load_texts("mine", s)
    )
    assert row["tokens"] is None


def test_shared_tokenizer_loads_the_default_once_when_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbricks.data import build

    calls: list[int] = []
    monkeypatch.setattr(build, "default_tokenizer", lambda: (calls.append(1), (None, "offline"))[1])
    said: list[str] = []
    assert build.shared_tokenizer("default", needed=False) == ("default", None) and not calls
    tok, name = build.shared_tokenizer("default", needed=True, progress=said.append)
    assert isinstance(tok, build.NoTokenizer) and tok.reason == "offline" and name is None
    assert said == [f"loading the {build.DEFAULT_TOKENIZER} tokenizer", "offline"] and calls == [1]
    monkeypatch.setattr(build, "default_tokenizer", lambda: ("TOK", "smollm2"))
    assert build.shared_tokenizer("default", needed=True) == ("TOK", "smollm2")
    assert build.shared_tokenizer(None, needed=True) == (None, None)


@pytest.mark.usefixtures("tmp_home")
def test_source_records_refuse_unknown_names() -> None:
    from lmbricks.data import source_records
    from lmbricks.errors import UnknownNameError

    (code,) = source_records(["code"])
    assert code["domain"] == "code" and code["cached"] is False and code["sources"][0]["version"] is None
    assert [r["domain"] for r in source_records()][:2] == ["en_prose", "code"]
    with pytest.raises(UnknownNameError):
        source_records(["nope"])
