"""CheckpointReader: single files, validated shard indexes, and pickles only on request."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lmbricks.checkpoint import CheckpointReader, save_state_dict
from lmbricks.errors import CheckpointError

CONFIG = {"model_type": "llama"}


def _model_dir(path: Path, tensors: dict[str, torch.Tensor], shard_bytes: str | int = "2GB") -> Path:
    return save_state_dict(path, tensors, config=CONFIG, max_shard_bytes=shard_bytes)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"layer.{i}.weight": torch.randn(16, 8, generator=g) for i in range(6)}


def test_single_file(tmp_path: Path) -> None:
    tensors = _tensors()
    d = _model_dir(tmp_path / "m", tensors)
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    with CheckpointReader(d) as r:
        assert r.config == CONFIG
        assert sorted(r.keys()) == sorted(tensors) and len(r) == 6 and "layer.0.weight" in r
        assert r.total_bytes() == 6 * 16 * 8 * 4
        assert r.file_of("layer.3.weight") == d / "model.safetensors"
        info = r.info("layer.3.weight")
        assert info.shape == (16, 8) and info.dtype == torch.float32 and info.nbytes == 512
        for name, t in tensors.items():
            assert torch.equal(r.get(name), t)
        with pytest.raises(CheckpointError, match=r"tensor 'layer\.9\.weigth' not in this checkpoint; did you mean"):
            r.get("layer.9.weigth")


def test_sharded_index(tmp_path: Path) -> None:
    tensors = _tensors()
    d = _model_dir(tmp_path / "m", tensors, shard_bytes=1024)  # two tensors per shard
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 6 * 512
    assert len(set(index["weight_map"].values())) == 3
    with CheckpointReader(d) as r:
        assert len(r.files()) == 3
        for name, t in tensors.items():
            assert r.file_of(name).name == index["weight_map"][name]
            assert torch.equal(r.get(name), t)


def test_index_naming_a_missing_shard(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m", _tensors(), shard_bytes=1024)
    (d / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError) as exc:
        CheckpointReader(d)
    msg = str(exc.value)
    assert "model.safetensors.index.json" in msg and "'model-00002-of-00003.safetensors'" in msg
    assert "holding tensor 'layer." in msg


def test_index_entry_absent_from_its_shard(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m", _tensors(), shard_bytes=1024)
    index_path = d / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["layer.7.weight"] = "model-00001-of-00003.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(
        CheckpointError, match=r"model-00001-of-00003\.safetensors: tensor 'layer\.7\.weight' is listed"
    ):
        CheckpointReader(d)


def test_tensor_in_two_shards(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m", _tensors(), shard_bytes=1024)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    first = sorted(n for n, s in index["weight_map"].items() if s.startswith("model-00001"))[0]
    # Rewrite shard 3 with a copy of one of shard 1's tensors added.
    shard3 = d / "model-00003-of-00003.safetensors"
    with CheckpointReader(d) as r:
        content = {n: r.get(n).clone() for n, s in index["weight_map"].items() if s == shard3.name}
        content[first] = r.get(first).clone()
    save_file(content, shard3)
    with pytest.raises(CheckpointError, match=rf"tensor '{first}' is also in .*model-00001-of-00003.safetensors"):
        CheckpointReader(d)


def test_config_missing_or_malformed(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m", _tensors())
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=rf"{d / 'config.json'}: malformed config.json"):
        CheckpointReader(d)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match=rf"{d / 'config.json'}: config.json not found"):
        CheckpointReader(d)
    with pytest.raises(CheckpointError, match="model directory not found"):
        CheckpointReader(tmp_path / "nowhere")


def test_no_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no weights found"):
        CheckpointReader(tmp_path)


def _pickle_model(d: Path) -> dict[str, torch.Tensor]:
    d.mkdir()
    (d / "config.json").write_text(json.dumps(CONFIG))
    tensors = _tensors()
    torch.save(tensors, d / "pytorch_model.bin")
    return tensors


def test_pickle_refused_without_flag_and_never_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _pickle_model(tmp_path / "m")

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not be called without allow_pickle")

    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: weights are a pickle.*allow_pickle=True"):
        CheckpointReader(tmp_path / "m")


def test_pickle_loaded_weights_only_with_flag(tmp_path: Path) -> None:
    tensors = _pickle_model(tmp_path / "m")
    with CheckpointReader(tmp_path / "m", allow_pickle=True) as r:
        assert sorted(r.keys()) == sorted(tensors)
        for name, t in tensors.items():
            assert torch.equal(r.get(name), t)
            assert r.info(name).shape == tuple(t.shape)


class _Evil:
    def __reduce__(self) -> tuple:
        return (shutil.rmtree, ("/definitely/not/here",))


def test_malicious_pickle_refused_even_with_flag(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    with open(d / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"w": _Evil()}, fh, protocol=2)
    with pytest.raises(CheckpointError, match="cannot load as a weights-only torch pickle"):
        CheckpointReader(d, allow_pickle=True)


def test_opening_reads_headers_only(tmp_path: Path) -> None:
    """A 4 GiB (sparse) shard opens instantly: only its header is read until get()."""
    d = tmp_path / "big"
    d.mkdir()
    (d / "config.json").write_text("{}")
    n = 2**30  # float32 elements: 4 GiB
    header = json.dumps({"huge": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    header += b" " * (-len(header) % 8)  # aligned data, as every writer pads it
    path = d / "model.safetensors"
    with open(path, "wb") as fh:
        fh.write(len(header).to_bytes(8, "little") + header)
        fh.truncate(8 + len(header) + 4 * n)  # a hole: no bytes on disk
    with CheckpointReader(d) as r:
        assert r.total_bytes() == 4 * n and r.info("huge").shape == (n,)
        t = r.get("huge")  # a lazy view: nothing read yet
        assert float(t[-1]) == 0.0 and t.shape == (n,)
