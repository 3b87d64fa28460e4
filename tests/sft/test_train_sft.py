"""``task: sft`` through the real training loop on a tiny model: loss falls, frozen parts stay put."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.sft.conftest import chat

from lmbricks.errors import ConfigError
from lmbricks.sft import write_jsonl
from lmbricks.sft.schema import Example
from lmbricks.train import parse_config, train


def _config(tmp: Path, chats: list[Example], **sft: Any) -> Any:
    data = write_jsonl(chats * 4, tmp / "train.jsonl")
    held = write_jsonl(chats[:2], tmp / "held.jsonl")
    model: dict[str, Any] = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
    if sft.pop("moe", False):
        model["moe"] = dict(num_experts=4, top_k=2, intermediate_size=32)
    return parse_config(
        {
            "task": "sft",
            "model": model,
            "tokenizer": "lmbricks-tiny",
            "sft": {"jsonl": [str(data)], "eval_jsonl": [str(held)], "seq_len": 96, "generations": 1,
                    "max_new_tokens": 4, **sft},
            "steps": 12,
            "batch_size": 4,
            "optim": {"lr": 1e-2},
            "checkpoint_every": 6,
            "threads": 1,
            "precision": "fp32",
            "device": "cpu",
        }
    )  # fmt: skip


def test_sft_run_learns_responses(tmp_path: Path, chats: list[Example]) -> None:
    cfg = _config(tmp_path, chats)
    result = train(cfg, tmp_path / "run", report=True)
    losses = [r["loss"] for r in result.records]
    assert losses[-1] < 0.8 * losses[0]
    evals = [json.loads(x) for x in (tmp_path / "run" / "sft_eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 6, 12]
    assert evals[-1]["held_out_response_loss"] < evals[0]["held_out_response_loss"]
    stats = json.loads((tmp_path / "run" / "sft_data.json").read_text())
    assert stats["train_examples"] == 16 and stats["train_blocks"] < 16
    gens = json.loads((tmp_path / "run" / "generations.json").read_text())
    assert gens[0]["prompt"] == "hello there"
    assert "Held-out response loss" in (tmp_path / "run" / "report.html").read_text()


def test_freeze_routers_and_expert_lr(tmp_path: Path, chats: list[Example]) -> None:
    from lmbricks.nn.load import load_model
    from lmbricks.train.setup import build_model, load_tokenizer, make_optimizer

    cfg = _config(tmp_path, chats, moe=True, freeze=["routers"], expert_lr_scale=0.5)
    torch.manual_seed(cfg.seed)
    start = build_model(cfg, load_tokenizer("lmbricks-tiny"))
    result = train(cfg, tmp_path / "run", report=False)
    assert result.final_checkpoint is not None
    end, _ = load_model(result.final_checkpoint, hf_fallback=False)
    before, after = dict(start.named_parameters()), dict(end.named_parameters())
    for name, p in after.items():
        moved = not torch.equal(p, before[name])
        if ".ffn.router." in name:
            assert not moved, name
        elif ".ffn.experts." in name or "attn.qkv" in name:
            assert moved, name
    from lmbricks.sft.params import apply_freeze

    assert cfg.sft is not None
    apply_freeze(end, cfg.sft)
    lrs = {g["kind"]: g["lr"] for g in make_optimizer(end, cfg).param_groups}
    assert lrs == {"expert": 5e-3, "non_expert": 1e-2}  # routers frozen: no group


def test_config_errors_name_fields(tmp_path: Path, chats: list[Example]) -> None:
    with pytest.raises(ConfigError, match="sft"):
        parse_config({"task": "sft", "model": {}, "tokenizer": "x", "steps": 1, "batch_size": 1})
    with pytest.raises(ConfigError, match="freeze"):
        _config(tmp_path, chats, freeze=["everything"])


def test_too_long_record_fails_before_training(tmp_path: Path, chats: list[Example]) -> None:
    cfg = _config(tmp_path, [*chats, chat("word " * 200, "ok")], seq_len=64)
    with pytest.raises(ConfigError, match=r"train.jsonl: record 5: \d+ tokens, longer than the context of 64"):
        train(cfg, tmp_path / "run", report=False)
