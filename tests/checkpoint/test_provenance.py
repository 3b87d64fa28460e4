"""content_hash, lmbricks.json and tokenizer copies."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lmbricks import __version__
from lmbricks.checkpoint import content_hash, copy_tokenizer, identity, provenance, write_provenance
from lmbricks.errors import CheckpointError


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LMBRICKS_HOME", str(home))
    return home


def _model(d: Path, value: float = 1.0) -> Path:
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama"}')
    save_file({"w": torch.full((4, 4), value)}, d / "model.safetensors")
    (d / "tokenizer.json").write_text("{}")
    return d


def test_hash_is_of_the_content(tmp_path: Path) -> None:
    d = _model(tmp_path / "a")
    identity = provenance.model_identity(d)
    assert identity is not None and content_hash(d) == identity.sha256
    # A copy hashes the same, whatever else lies in it; a changed weight changes the hash.
    c = tmp_path / "copy"
    shutil.copytree(d, c)
    (c / "lmbricks.json").write_text("{}")
    (c / "README.md").write_text("hi")
    assert content_hash(c) == content_hash(d)
    save_file({"w": torch.full((4, 4), 1.0).index_fill_(0, torch.tensor([3]), 2.0)}, c / "model.safetensors")
    assert content_hash(c) != content_hash(d)
    # A single file hashes as itself (GGUF downloads are checked this way).
    raw = (d / "model.safetensors").read_bytes()
    assert content_hash(d / "model.safetensors") == hashlib.sha256(raw).hexdigest()


def test_hash_cache_avoids_rehashing(tmp_path: Path, _home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _model(tmp_path / "a")
    first = content_hash(d)
    assert (_home / "hashes.json").is_file()
    calls: list[Path] = []
    real = identity.safetensors_tensor_hashes

    def counting(path: Path) -> dict:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(identity, "safetensors_tensor_hashes", counting)
    assert content_hash(d) == first and calls == []
    (d / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')  # the weights are not hashed again
    assert content_hash(d) != first and calls == []
    save_file({"w": torch.zeros(4, 4)}, d / "model.safetensors")
    assert content_hash(d) != first and [p.name for p in calls] == ["model.safetensors"]


def test_truncated_weights_are_named(tmp_path: Path) -> None:
    d = _model(tmp_path / "a")
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[:-7])
    with pytest.raises(CheckpointError, match="model.safetensors: truncated"):
        content_hash(d)


def test_hash_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        content_hash(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config, weight or tokenizer files"):
        content_hash(tmp_path / "empty")


def test_write_provenance(tmp_path: Path) -> None:
    a, b = _model(tmp_path / "a"), _model(tmp_path / "b")
    out = tmp_path / "out"
    out.mkdir()
    path = write_provenance(
        out,
        command="lmbricks merge recipe.yaml",
        recipe={"merge_method": "linear"},
        inputs={"base": a, "tuned": str(b)},
        bricks={"experts": 0},
    )
    record = json.loads(path.read_text())
    assert path == out / "lmbricks.json"
    assert record["lmbricks_version"] == __version__
    assert datetime.fromisoformat(record["created"]).utcoffset() == timedelta(0)
    assert record["command"] == "lmbricks merge recipe.yaml" and record["recipe"] == {"merge_method": "linear"}
    assert [(i["name"], i["ref"], i["sha256"]) for i in record["inputs"]] == [
        ("base", "../a", content_hash(a)),
        ("tuned", "../b", content_hash(b)),
    ]
    assert all("path" not in i and i["identity"]["sha256"] == i["sha256"] for i in record["inputs"])
    assert record["bricks"] == {"experts": 0}
    assert sorted(p.name for p in out.iterdir()) == ["lmbricks.json"]


def test_copy_tokenizer(tiny_llama: Path, tmp_path: Path) -> None:
    copied = copy_tokenizer(tiny_llama, tmp_path / "dst")
    assert "tokenizer.json" in copied and "tokenizer_config.json" in copied and "generation_config.json" in copied
    assert "config.json" not in copied and "model.safetensors" not in copied
    for name in copied:
        assert (tmp_path / "dst" / name).read_bytes() == (tiny_llama / name).read_bytes()
    from transformers import AutoTokenizer

    text = "The quick brown fox"
    assert (
        AutoTokenizer.from_pretrained(tmp_path / "dst")(text).input_ids
        == AutoTokenizer.from_pretrained(tiny_llama)(text).input_ids
    )
