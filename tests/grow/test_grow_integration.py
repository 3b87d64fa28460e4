"""The grow commands on the real default model (integration: needs the cached model, corpora and bricks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmbricks.grow import assemble, evaluate_routed, upcycle
from lmbricks.hub import DEFAULT_MODEL, resolve_model
from lmbricks.nn import load_model

pytestmark = pytest.mark.integration
BRICKS = Path(__file__).resolve().parents[2] / "bricks" / DEFAULT_MODEL


def _ids(tok: object) -> torch.Tensor:
    text = "def add(a, b):\n    return a + b\n\nThe lady walked to the garden. 你好，世界。"
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])  # type: ignore[operator]


def test_upcycled_default_model_equals_dense_in_transformers(tmp_path: Path) -> None:
    dense, tok = load_model(DEFAULT_MODEL)
    ids = _ids(tok)
    out = upcycle(DEFAULT_MODEL, tmp_path / "up", experts=4, top_k=2)
    assert json.loads((out / "config.json").read_text())["model_type"] == "mixtral"
    with torch.no_grad():
        ref = dense(ids).logits
        del dense
        hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        theirs = hf(ids).logits
        del hf
        ours = load_model(out)[0](ids).logits
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-5)  # fp32 rounding over 30 layers
    torch.testing.assert_close(theirs, ours, atol=2e-4, rtol=1e-5)  # fp32 rounding over 30 layers


def test_four_brick_moe_loads_in_transformers_and_routes_by_domain(tmp_path: Path) -> None:
    recipe = {
        "base_model": DEFAULT_MODEL,
        "gate_mode": "domain",
        "experts_per_token": 2,
        "domain_tokens": 256,
        "experts": [{"brick": str(BRICKS / d), "domain": d} for d in ("code", "math", "zh", "dialogue")],
    }
    out = assemble(recipe, tmp_path / "moe")
    moe, tok = load_model(out)
    ids = _ids(tok)
    with torch.no_grad():
        ours = moe(ids).logits
        hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        torch.testing.assert_close(hf(ids).logits, ours, atol=2e-4, rtol=1e-5)  # fp32 rounding over 30 layers
    del hf
    res = evaluate_routed(moe, tok, ["zh"], 600)
    shares = res["zh"].shares()
    assert shares is not None and int(shares.argmax()) == 2  # Chinese text goes to the zh brick's expert
    assert resolve_model(DEFAULT_MODEL).is_dir()
