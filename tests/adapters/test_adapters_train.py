"""Training and updating bricks on the tiny model: loss falls, outputs load in PEFT, inputs are untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmbricks.adapters import load_factors, make_config, read_brick, train_brick, update_brick
from lmbricks.checkpoint import content_hash
from lmbricks.errors import ConfigError

TEXTS = ["the quick brown fox jumps over the lazy dog. " * 8, "def main(): return 1 + 2 * x\n" * 8] * 4


def test_train_then_update(tiny_llama: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    cfg = make_config(steps=12, seq_len=32, lr=1e-2, rank=4, eval_bytes=0)
    before = content_hash(tiny_llama)
    info = train_brick(tiny_llama, tmp_path / "b", cfg, texts=TEXTS)
    loss = info.record["bricks"]["adapter"]
    assert loss["loss_last"] < loss["loss_first"]
    assert info.rank == 4 and info.base_sha256 == before
    # The saved brick, loaded by PEFT, is what load_factors describes.
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    weight = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    peft_model = PeftModel.from_pretrained(model, str(info.path))
    merged = peft_model.merge_and_unload().model.layers[0].mlp.up_proj.weight
    pair = load_factors(info.path)["model.layers.0.mlp.up_proj"]
    torch.testing.assert_close(merged, weight + pair.delta(), rtol=1e-5, atol=1e-6)

    updated = update_brick(
        info.path, tmp_path / "b2", make_config(steps=4, seq_len=32, lr=1e-2, eval_bytes=0), texts=TEXTS
    )
    assert updated.rank == 4
    assert not torch.equal(load_factors(updated.path)["model.layers.0.mlp.up_proj"].B, pair.B)
    assert read_brick(info.path).record == info.record  # the input brick is untouched
    assert content_hash(tiny_llama) == before  # and so is the base


def test_bad_config_names_the_field(tiny_llama: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rank"):
        make_config(rank=0)
    with pytest.raises(ConfigError, match="save_dtype"):
        make_config(save_dtype="int8")
    (tmp_path / "exists").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        train_brick(tiny_llama, tmp_path / "exists", make_config(steps=1), texts=TEXTS)


def test_pieces_rejoin_and_spread_training_over_documents() -> None:
    from lmbricks.adapters.train_data import cut_pieces, order_documents

    text = "".join(f"line {i} " + "x" * (i % 37) + "\n" for i in range(400))
    pieces = cut_pieces(text, 500)
    assert "".join(pieces) == text and len(pieces) > 5
    assert all(p.endswith("\n") and len(p.encode()) >= 500 for p in pieces[:-1])
    assert cut_pieces(text, 0) == [text] and cut_pieces("short", 500) == ["short"]
    # Two long documents and many short ones: cut, each long one becomes many shuffled pieces.
    records = [{"text": f"doc{d} line\n" * 500, "source": "s"} for d in range(2)]
    records += [{"text": f"small{d}\n", "source": "s"} for d in range(20)]
    whole = order_documents(records, seed=0, balance_sources=False)
    cut = order_documents(records, seed=0, balance_sources=False, piece_bytes=1000)
    assert sorted(whole) == sorted(r["text"] for r in records)
    for d in range(2):
        assert sum(t.startswith(f"doc{d}") for t in cut) >= 5
    assert sorted("".join(cut)) == sorted("".join(whole))  # the same characters, nothing lost or added
    with pytest.raises(ConfigError, match="piece_bytes"):
        make_config(piece_bytes=-1)
