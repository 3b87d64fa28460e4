"""Healing's precision: fp32 is the plain run (bit for bit); bf16 autocasts the forwards, keeps the
trained weights fp32 and records the precision in its statistics."""

from __future__ import annotations

import copy

import torch

from lmbricks.moefy import make_config, moefied_layers, moefy_model
from lmbricks.moefy.heal import HealConfig, heal


def _heal(tiny_model, fake_texts, precision: str | None):  # type: ignore[no-untyped-def]
    model, tok = copy.deepcopy(tiny_model[0]), tiny_model[1]
    teacher = copy.deepcopy(model)
    cfg = make_config(experts=8, top_k=2, split="kmeans", router="mlp", router_steps=10, calib_chunks=2,
                      calib_seq_len=32)  # fmt: skip
    moefy_model(model, tok, cfg, texts_of=fake_texts, domains=("a", "b"))
    blocks = torch.randint(3, 384, (4, 32), generator=torch.Generator().manual_seed(0))
    settings = {"max_tokens": 6 * 64, "max_minutes": None, "lr": 3e-3, "batch_size": 2}
    config = HealConfig(**settings) if precision is None else HealConfig(**settings, precision=precision)  # type: ignore[arg-type]
    return heal(model, teacher, blocks, config), model


def test_fp32_healing_is_the_plain_run_and_bf16_autocasts(tiny_model, fake_texts) -> None:
    torch.manual_seed(0)
    plain, _ = _heal(tiny_model, fake_texts, None)
    torch.manual_seed(0)
    fp32, _ = _heal(tiny_model, fake_texts, "fp32")
    assert fp32.kl == plain.kl and fp32.precision == plain.precision == "fp32"
    torch.manual_seed(0)
    bf16, model = _heal(tiny_model, fake_texts, "bf16")
    assert bf16.precision == "bf16" and bf16.steps == fp32.steps
    assert bf16.kl != fp32.kl and abs(bf16.kl[0] - fp32.kl[0]) < 0.1 * abs(fp32.kl[0]) + 1e-3
    assert all(m.w_up.dtype == torch.float32 for m in moefied_layers(model))  # master weights stay fp32
