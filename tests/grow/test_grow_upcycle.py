"""Sparse upcycling: equal to the dense model at init, loadable by transformers, atomic, validated early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmbricks.errors import ConfigError
from lmbricks.grow import UpcycleOptions, upcycle, upcycle_model
from lmbricks.nn import load_model

IDS = torch.randint(0, 384, (2, 24), generator=torch.Generator().manual_seed(0))


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize(
    ("options", "family"),
    [
        (dict(experts=4, top_k=2), "mixtral"),
        (dict(experts=3, top_k=1, every=2, shared_expert=True), "qwen2_moe"),
        (dict(experts=4, top_k=3, shared_expert=True), "qwen2_moe"),
    ],
)
def test_upcycled_equals_dense_and_loads_in_transformers(
    tiny_llama: Path, tmp_path: Path, options: dict, family: str
) -> None:
    dense, _ = load_model(tiny_llama)
    out = upcycle(tiny_llama, tmp_path / "up", **options)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == family and cfg["num_experts_per_tok"] == options["top_k"]
    moe, tok = load_model(out)
    assert tok is not None and moe.cfg.num_moe_layers == (1 if options.get("every") == 2 else 2)
    ours = _logits(moe)
    torch.testing.assert_close(ours, _logits(dense), atol=1e-5, rtol=0)  # identical experts == dense
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    torch.testing.assert_close(_logits(hf), ours, atol=1e-5, rtol=0)  # transformers == lmbricks forward
    record = json.loads((out / "lmbricks.json").read_text())
    assert len(record["bricks"]["experts"]) == options["experts"] and record["bricks"]["family"] == family
    assert record["inputs"][0]["name"] == "model"


def test_routers_differ_but_do_not_matter(tiny_llama: Path) -> None:
    dense, _ = load_model(tiny_llama)
    a = upcycle_model(dense, UpcycleOptions(experts=4, top_k=1, seed=0))
    b = upcycle_model(dense, UpcycleOptions(experts=4, top_k=1, seed=1))
    ra, rb = a.layers[0].ffn.router.gate.weight, b.layers[0].ffn.router.gate.weight
    assert not torch.equal(ra, rb)
    torch.testing.assert_close(_logits(a), _logits(b), atol=1e-6, rtol=0)


def test_noise_breaks_the_symmetry(tiny_llama: Path) -> None:
    dense, _ = load_model(tiny_llama)
    moe = upcycle_model(dense, UpcycleOptions(experts=2, top_k=1, noise=0.1))
    w = moe.layers[0].ffn.experts.gate_up
    assert not torch.equal(w[0], w[1])
    with torch.no_grad():
        rel = (w[0] - dense.layers[0].ffn.gate_up.weight.t()).std() / dense.layers[0].ffn.gate_up.weight.std()
    assert 0.05 < float(rel) < 0.2  # noise is relative to each matrix's spread
    assert (_logits(moe) - _logits(dense)).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(experts=2, top_k=3), "top_k"),
        (dict(experts=0, top_k=1), "experts"),
        (dict(experts=2, top_k=1, every=3), "every"),
        (dict(experts=2, top_k=1, noise=-1.0), "noise"),
    ],
)
def test_bad_options_fail_before_writing(tiny_llama: Path, tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        upcycle(tiny_llama, tmp_path / "out", **options)
    assert list(tmp_path.iterdir()) == []


def test_moe_input_and_existing_output_refused(tiny_llama: Path, tiny_mixtral: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already a mixture"):
        upcycle(tiny_mixtral, tmp_path / "out", experts=2, top_k=1)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        upcycle(tiny_llama, tmp_path / "taken", experts=2, top_k=1)
    with pytest.raises(ConfigError, match="not written by lmbricks"):  # a folder of the user's
        upcycle(tiny_llama, tmp_path / "taken", experts=2, top_k=1, force=True)
    first = upcycle(tiny_llama, tmp_path / "ours", experts=2, top_k=1)
    out = upcycle(tiny_llama, first, experts=4, top_k=1, force=True)  # an earlier output is replaced
    assert json.loads((out / "config.json").read_text())["num_local_experts"] == 4


def test_interrupted_write_leaves_nothing(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lmbricks.nn.load as nn_load

    def fail(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(nn_load, "write_model_dir", fail)
    with pytest.raises(OSError, match="disk full"):
        upcycle(tiny_llama, tmp_path / "out", experts=2, top_k=1)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary directory


def test_dtype_follows_the_input_unless_asked(tmp_path: Path) -> None:
    from lmbricks.testing import save_tiny_model, tiny_llama_config

    base = save_tiny_model(tmp_path / "bf16", tiny_llama_config(), seed=0, dtype=torch.bfloat16)
    out = upcycle(base, tmp_path / "up", experts=2, top_k=1)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    out32 = upcycle(base, tmp_path / "up32", experts=2, top_k=1, dtype="float32")
    assert json.loads((out32 / "config.json").read_text())["dtype"] == "float32"
    dense, _ = load_model(base)
    moe, _ = load_model(out)  # bf16 copies of bf16 weights are exact
    torch.testing.assert_close(_logits(moe), _logits(dense), atol=1e-5, rtol=0)
