"""ShardedWriter / save_state_dict: bounded shards, exact bytes, output that transformers loads."""

from __future__ import annotations

import gc
import json
import random
import threading
import weakref
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lmbricks.checkpoint import CheckpointReader, SafetensorsFile, ShardedWriter, parse_size, save_state_dict
from lmbricks.errors import CheckpointError, ConfigError


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("500MB", 500_000_000),
        ("1.5GB", 1_500_000_000),
        ("2GiB", 2 * 1024**3),
        ("2gib", 2 * 1024**3),
        ("64KiB", 65536),
        ("3 kb", 3000),
        ("10B", 10),
        ("0.5TB", 500_000_000_000),
        ("7M", 7_000_000),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "1.2.3GB", "5 parsecs", "-1MB", "1e9", -5, True, None])
def test_parse_size_rejects_garbage(text: object) -> None:
    with pytest.raises(ConfigError):
        parse_size(text)  # type: ignore[arg-type]


def _mixed_tensors(n: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.float64, torch.bool]
    out = {}
    for i in range(n):
        dt = dtypes[i % len(dtypes)]
        t = torch.randn(7 + i, 5, generator=g) * 10
        out[f"block.{i}.w"] = t > 0 if dt == torch.bool else t.to(dt)
    return out


def _shard_data_bytes(path: Path) -> int:
    with SafetensorsFile(path) as f:
        return sum(f.info(n).nbytes for n in f)


def test_shards_are_bounded_named_and_indexed(tmp_path: Path) -> None:
    tensors = _mixed_tensors()
    limit = 400
    writer = ShardedWriter(tmp_path, max_shard_bytes=limit, metadata={"producer": "test"})
    for name, t in tensors.items():
        writer.add(name, t)
    index = writer.finish()
    n = len(set(index["weight_map"].values()))
    assert n > 3
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)] + [
        "model.safetensors.index.json"
    ]
    assert json.loads((tmp_path / "model.safetensors.index.json").read_text()) == index
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    for shard in set(index["weight_map"].values()):
        size = _shard_data_bytes(tmp_path / shard)
        single = len([k for k, v in index["weight_map"].items() if v == shard]) == 1
        assert size <= limit or single
        with safe_open(tmp_path / shard, "pt") as f:  # the reference reader agrees, tensor by tensor
            assert f.metadata() == {"format": "pt", "producer": "test"}
            names = f.keys()
            for name in names:
                assert index["weight_map"][name] == shard
                assert torch.equal(f.get_tensor(name), tensors[name])


def test_every_tensor_is_aligned_for_zero_copy(tmp_path: Path) -> None:
    writer = ShardedWriter(tmp_path)
    tensors = {
        "a_bool": torch.ones(3, dtype=torch.bool),
        "b_f16": torch.ones(5, dtype=torch.float16),
        "c_f64": torch.ones(3, dtype=torch.float64),
        "d_f32": torch.ones(1, dtype=torch.float32),
    }
    for name, t in tensors.items():
        writer.add(name, t)
    writer.finish()
    with SafetensorsFile(tmp_path / "model.safetensors") as f:
        for name, t in tensors.items():
            assert f.info(name).start % t.element_size() == 0
            assert torch.equal(f.get(name), t)


def test_single_shard_has_no_index_and_empty_writer_is_valid(tmp_path: Path) -> None:
    w = ShardedWriter(tmp_path / "one")
    w.add("x", torch.zeros(3))
    assert w.finish() == {"metadata": {"total_size": 12}, "weight_map": {"x": "model.safetensors"}}
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["model.safetensors"]
    empty = ShardedWriter(tmp_path / "none")
    assert empty.finish()["weight_map"] == {}
    assert SafetensorsFile(tmp_path / "none" / "model.safetensors").keys() == []


def test_misuse_raises(tmp_path: Path) -> None:
    w = ShardedWriter(tmp_path)
    w.add("x", torch.zeros(2))
    with pytest.raises(CheckpointError, match="tensor 'x' added twice"):
        w.add("x", torch.zeros(2))
    with pytest.raises(CheckpointError, match="invalid tensor name"):
        w.add("__metadata__", torch.zeros(2))
    w.finish()
    with pytest.raises(CheckpointError, match="after finish"):
        w.add("y", torch.zeros(2))
    with pytest.raises(CheckpointError, match="finish\\(\\) called twice"):
        w.finish()
    with pytest.raises(ConfigError, match="positive"):
        ShardedWriter(tmp_path, 0)


def test_buffered_mode_releases_each_shard(tmp_path: Path) -> None:
    """Memory stays within one shard: written shards' tensors are no longer referenced."""
    w = ShardedWriter(tmp_path, max_shard_bytes=4000)
    first = torch.randn(500)  # 2000 bytes
    ref = weakref.ref(first)
    w.add("first", first)
    w.add("second", torch.randn(500))  # fills the shard: it is written now, not at finish()
    del first
    gc.collect()
    assert ref() is None
    assert [p.name for p in tmp_path.iterdir()] == [".shard-00001.partial"]
    w.add("third", torch.randn(10))
    index = w.finish()
    assert index["weight_map"] == {
        "first": "model-00001-of-00002.safetensors",
        "second": "model-00001-of-00002.safetensors",
        "third": "model-00002-of-00002.safetensors",
    }


def test_declared_mode_accepts_any_order_from_threads(tmp_path: Path) -> None:
    tensors = _mixed_tensors(24, seed=3)
    w = ShardedWriter(tmp_path, max_shard_bytes=600)
    w.declare((n, tuple(t.shape), t.dtype) for n, t in tensors.items())
    order = list(tensors)
    random.Random(0).shuffle(order)

    def work(names: list[str]) -> None:
        for name in names:
            w.add(name, tensors[name])

    threads = [threading.Thread(target=work, args=(order[i::3],)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    index = w.finish()
    assert len(set(index["weight_map"].values())) > 2
    with _reader(tmp_path) as r:
        for name, t in tensors.items():
            assert torch.equal(r.get(name), t)


def _reader(directory: Path) -> CheckpointReader:
    (directory / "config.json").write_text("{}")
    return CheckpointReader(directory)


def test_declared_mode_checks(tmp_path: Path) -> None:
    w = ShardedWriter(tmp_path)
    w.declare([("a", (2, 3), torch.float32), ("b", (4,), torch.bfloat16)])
    with pytest.raises(CheckpointError, match=r"tensor 'a': got \(3, 2\) torch.float32, declared \(2, 3\)"):
        w.add("a", torch.zeros(3, 2))
    with pytest.raises(CheckpointError, match="not declared"):
        w.add("c", torch.zeros(1))
    w.add("a", torch.zeros(2, 3))
    with pytest.raises(CheckpointError, match="1 declared tensors never added, e.g. 'b'"):
        w.finish()
    with pytest.raises(CheckpointError, match="declared twice"):
        ShardedWriter(tmp_path / "x").declare([("a", (1,), torch.float32), ("a", (1,), torch.float32)])


def _logits(path: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 200, 17, 3, 300, 42]])
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_mixtral"])
def test_resaved_model_loads_in_transformers_with_identical_logits(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    src: Path = request.getfixturevalue(fixture)
    with CheckpointReader(src) as r:
        tensors = {name: r.get(name) for name in r}
        config = r.config
        total = r.total_bytes()
    extra = {p.name: p for p in src.iterdir() if p.name.startswith(("tokenizer", "special", "generation"))}
    dest = save_state_dict(tmp_path / "out", tensors, config=config, max_shard_bytes=total // 3, extra_files=extra)
    assert (dest / "model.safetensors.index.json").is_file()
    assert len(list(dest.glob("model-*-of-*.safetensors"))) >= 3
    assert torch.equal(_logits(dest), _logits(src))
    from transformers import AutoTokenizer

    assert (
        AutoTokenizer.from_pretrained(dest)("hello there").input_ids
        == AutoTokenizer.from_pretrained(src)("hello there").input_ids
    )


def test_save_state_dict_bf16_round_trip(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(5)
    tensors = {f"w{i}": torch.randn(33, 9, generator=g).to(torch.bfloat16) for i in range(5)}
    dest = save_state_dict(tmp_path / "bf16", tensors, config={"a": 1}, max_shard_bytes="1KB")
    assert json.loads((dest / "config.json").read_text()) == {"a": 1}
    with CheckpointReader(dest) as r:
        assert len(r.files()) == 5
        for name, t in tensors.items():
            got = r.get(name)
            assert got.dtype == torch.bfloat16 and torch.equal(got.view(torch.int16), t.view(torch.int16))
