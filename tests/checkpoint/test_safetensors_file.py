"""SafetensorsFile: bit-exact reads of every dtype, zero-copy views, and loud failures on bad files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmbricks.checkpoint import SAFETENSORS_DTYPES, SafetensorsFile, ShardedWriter
from lmbricks.errors import CheckpointError


def _bytes(t: torch.Tensor) -> bytes:
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _random_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """One tensor per dtype this torch can store in safetensors, with random bit patterns."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for code, dtype in SAFETENSORS_DTYPES.items():
        size = torch.empty((), dtype=dtype).element_size()
        raw = torch.randint(0, 256, (5 * 3 * size,), dtype=torch.uint8, generator=g)
        if dtype == torch.bool:
            raw = raw % 2
        out[f"t_{code}"] = raw.view(dtype).reshape(5, 3)
    out["scalar"] = torch.tensor(2.5, dtype=torch.bfloat16)
    out["empty"] = torch.empty(0, 7)
    out["big_bf16"] = torch.randn(301, 17, generator=g).to(torch.bfloat16)
    return out


def _raw_file(path: Path, header: dict | bytes, data: bytes = b"", length: int | None = None) -> Path:
    """Write a safetensors file by hand (possibly a broken one)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    path.write_bytes(n.to_bytes(8, "little") + raw + data)
    return path


def test_round_trip_every_dtype_bit_exact_with_several_shards(tmp_path: Path) -> None:
    tensors = _random_tensors()
    writer = ShardedWriter(tmp_path, max_shard_bytes=300)
    for name, t in tensors.items():
        writer.add(name, t)
    index = writer.finish()
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3
    seen = set()
    for shard in shards:
        with SafetensorsFile(tmp_path / shard) as f:
            assert f.metadata["format"] == "pt"
            for name in f:
                got, want = f.get(name), tensors[name]
                assert got.dtype == want.dtype and got.shape == want.shape
                assert _bytes(got) == _bytes(want), name
                # and the reference implementation reads the same bytes
                ref = load_file(tmp_path / shard)[name]
                assert _bytes(ref) == _bytes(want)
                seen.add(name)
    assert seen == set(tensors)


def test_reads_files_written_by_safetensors(tmp_path: Path) -> None:
    tensors = _random_tensors(1)
    save_file(tensors, tmp_path / "ref.safetensors", metadata={"who": "ref"})
    with SafetensorsFile(tmp_path / "ref.safetensors") as f:
        assert f.metadata == {"who": "ref"}
        assert set(f.keys()) == set(tensors)
        for name, want in tensors.items():
            assert _bytes(f.get(name)) == _bytes(want)
            assert f.info(name).nbytes == want.numel() * want.element_size()


def test_get_is_a_zero_copy_private_view(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.arange(1024, dtype=torch.float32).reshape(32, 32)}, path)
    before = path.read_bytes()
    f = SafetensorsFile(path)
    a, b = f.get("w"), f.get("w")
    assert a.data_ptr() == b.data_ptr()  # both view the mapping: nothing was copied
    a.mul_(-1)  # in-place edits are allowed (copy-on-write) ...
    assert path.read_bytes() == before  # ... and never reach the file
    f.close()
    assert float(b[1, 0]) == -32.0  # views stay valid after close (and alias each other, like safe_open)
    assert torch.equal(SafetensorsFile(path).get("w"), torch.arange(1024, dtype=torch.float32).reshape(32, 32))


def test_unaligned_tensor_is_copied_into_aligned_memory(tmp_path: Path) -> None:
    # A 3-byte uint8 tensor followed by a float32 at data offset 3 (legal, unaligned).
    vals = torch.tensor([1.5, -2.0, 3.25], dtype=torch.float32)
    header = {
        "a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
        "b": {"dtype": "F32", "shape": [3], "data_offsets": [3, 15]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = _raw_file(tmp_path / "u.safetensors", raw, bytes([7, 8, 9]) + _bytes(vals))
    with SafetensorsFile(path) as f:
        b = f.get("b")
        assert b.data_ptr() % 4 == 0
        assert torch.equal(b, vals)
        assert f.get("a").tolist() == [7, 8, 9]


def test_truncated_file_names_file_and_tensor(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_file({"first": torch.zeros(8), "last": torch.ones(1000)}, path)
    size = path.stat().st_size
    os.truncate(path, size - 10)
    with pytest.raises(CheckpointError) as exc:
        SafetensorsFile(path)
    assert str(path) in str(exc.value) and "'last'" in str(exc.value) and "truncated" in str(exc.value)


def test_tiny_file_and_header_length_past_end(tmp_path: Path) -> None:
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x05\x00")
    with pytest.raises(CheckpointError, match=rf"{short}: truncated: 2 bytes"):
        SafetensorsFile(short)
    past = _raw_file(tmp_path / "past.safetensors", {"x": {}}, length=10_000)
    with pytest.raises(CheckpointError, match=rf"{past}: header length 10000 runs past the end of the file"):
        SafetensorsFile(past)
    huge = _raw_file(tmp_path / "huge.safetensors", b"{}", length=2**62)
    with pytest.raises(CheckpointError, match="exceeds"):
        SafetensorsFile(huge)


def test_malformed_header_json(tmp_path: Path) -> None:
    path = _raw_file(tmp_path / "bad.safetensors", b'{"w": {"dtype": "F32", ')
    with pytest.raises(CheckpointError, match=rf"{path}: malformed safetensors header JSON"):
        SafetensorsFile(path)
    path = _raw_file(tmp_path / "list.safetensors", b"[1, 2]")
    with pytest.raises(CheckpointError, match="expected an object"):
        SafetensorsFile(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}, "unknown or unsupported dtype 'F33'"),
        ({"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}, "not a list of non-negative integers"),
        ({"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}, "not a list of non-negative integers"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "must be two integers 0 <= begin <= end"),
        (
            {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]},
            r"span 12 bytes but shape \(2,\) of F32 needs 8",
        ),
        ({"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}, "span 8 bytes but shape"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}, "data ends at byte"),
        ("nope", "header entry is not an object"),
    ],
)
def test_bad_entries_name_file_and_tensor(tmp_path: Path, entry: object, message: str) -> None:
    path = _raw_file(
        tmp_path / "e.safetensors",
        {"good": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}, "bad.weight": entry},
        bytes(16),
    )
    with pytest.raises(CheckpointError, match=message) as exc:
        SafetensorsFile(path)
    assert str(exc.value).startswith(f"{path}: tensor 'bad.weight': ")


def test_overlapping_offsets(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
    }
    path = _raw_file(tmp_path / "o.safetensors", header, bytes(16))
    with pytest.raises(CheckpointError, match=rf"{path}: tensor 'b': bytes .* overlap tensor 'a'"):
        SafetensorsFile(path)


def test_bad_metadata_and_missing_tensor(tmp_path: Path) -> None:
    path = _raw_file(tmp_path / "m.safetensors", {"__metadata__": {"n": 1}})
    with pytest.raises(CheckpointError, match="__metadata__ must map strings to strings"):
        SafetensorsFile(path)
    ok = tmp_path / "ok.safetensors"
    save_file({"w": torch.zeros(2)}, ok)
    with pytest.raises(CheckpointError, match=rf"{ok}: tensor 'v': no such tensor"):
        SafetensorsFile(ok).get("v")
    with pytest.raises(CheckpointError, match="file not found"):
        SafetensorsFile(tmp_path / "absent.safetensors")


def test_falls_back_to_copies_when_private_mapping_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under strict overcommit a MAP_PRIVATE mapping can fail with ENOMEM: reads still work."""
    import errno
    import mmap
    import types

    from lmbricks.checkpoint import safetensors_file

    def fake_mmap(fileno: int, length: int, access: int = mmap.ACCESS_WRITE) -> mmap.mmap:
        if access == mmap.ACCESS_COPY:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return mmap.mmap(fileno, length, access=access)

    monkeypatch.setattr(safetensors_file, "mmap", types.SimpleNamespace(**{**vars(mmap), "mmap": fake_mmap}))
    path = tmp_path / "m.safetensors"
    want = torch.randn(64, 8)
    save_file({"w": want}, path)
    f = SafetensorsFile(path)
    got = f.get("w")
    assert torch.equal(got, want)
    got.zero_()  # a private copy: writable, and the next read is unaffected
    assert torch.equal(f.get("w"), want)
