"""Growing an MoE by one expert keeps every weight and every output that does not use the new expert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmbricks.errors import ConfigError
from lmbricks.grow import assemble, grow, with_top_k
from lmbricks.grow.build import moe_layers
from lmbricks.merge.lora import LoraAdapter
from lmbricks.nn import load_model


@pytest.fixture
def moe_dir(tiny_llama: Path, finetunes: list[Path], domains: list[str], tmp_path: Path) -> Path:
    recipe = {
        "base_model": str(tiny_llama),
        "gate_mode": "domain",
        "experts_per_token": 2,
        "domain_tokens": 512,
        "experts": [{"source_model": str(f), "domain": d} for f, d in zip(finetunes[:2], domains[:2], strict=True)],
    }
    return assemble(recipe, tmp_path / "moe")


def test_grow_keeps_weights_and_unselected_outputs(
    moe_dir: Path, bricks: list[Path], domains: list[str], tiny_llama: Path, tmp_path: Path
) -> None:
    out = grow(moe_dir, str(bricks[2]), tmp_path / "grown", domain=domains[2])
    old, _ = load_model(moe_dir)
    new, _ = load_model(out)
    base, _ = load_model(tiny_llama)
    old_sd, new_sd = old.state_dict(), new.state_dict()
    for name, t in old_sd.items():
        if ".ffn.router." in name or ".ffn.experts." in name:
            torch.testing.assert_close(new_sd[name][: t.shape[0]], t, atol=0, rtol=0)  # old experts and rows
        else:
            torch.testing.assert_close(new_sd[name], t, atol=0, rtol=0)
    lora = LoraAdapter(bricks[2])
    want = base.layers[0].ffn.down.weight + lora.delta("model.layers.0.mlp.down_proj.weight")
    torch.testing.assert_close(new.layers[0].ffn.experts.down[2], want.t(), atol=1e-6, rtol=0)
    gen = torch.Generator().manual_seed(0)
    for i, layer in moe_layers(new).items():
        h = torch.randn(64, new.cfg.hidden_size, generator=gen)
        h[:8] += 20 * layer.router.gate.weight[2]  # some tokens certainly pick the new expert
        with torch.no_grad():
            y_new, aux = layer(h)
            y_old, _ = moe_layers(old)[i](h)
        uses_new = (aux.indices == 2).any(-1)  # (T,)
        assert uses_new.any() and (~uses_new).any()
        torch.testing.assert_close(y_new[~uses_new], y_old[~uses_new], atol=1e-6, rtol=0)
        assert (y_new[uses_new] - y_old[uses_new]).abs().max() > 1e-4


def test_grown_model_loads_in_transformers_and_records_the_expert(
    moe_dir: Path, bricks: list[Path], domains: list[str], tmp_path: Path
) -> None:
    out = grow(moe_dir, str(bricks[2]), tmp_path / "grown", domain=domains[2])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "mixtral" and cfg["num_local_experts"] == 3 and cfg["num_experts_per_tok"] == 2
    ids = torch.randint(0, 384, (2, 20), generator=torch.Generator().manual_seed(1))
    ours, _ = load_model(out)
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids).logits, atol=1e-5, rtol=0)
    inv = json.loads((out / "lmbricks.json").read_text())["bricks"]
    assert [e["domain"] for e in inv["experts"]] == domains
    # Records name inputs relative to the output, never by a machine path.
    assert not Path(inv["grown_from"]).is_absolute() and (out / inv["grown_from"]).resolve() == moe_dir.resolve()
    assert inv["routers"]["grown_row"] == "domain mean (centred)"
    # the new row has the norm of the layer's existing rows
    new, _ = load_model(out)
    w = new.layers[0].ffn.router.gate.weight
    torch.testing.assert_close(w[2].norm(), w[:2].norm(dim=-1).mean())


def test_positions_before_the_first_use_of_the_new_expert_are_unchanged(moe_dir: Path) -> None:
    from lmbricks.grow import grow_model
    from lmbricks.grow.sources import ExpertFFN

    old, _ = load_model(moe_dir)
    layers = moe_layers(old)
    h = old.cfg.hidden_size
    gen = torch.Generator().manual_seed(3)
    # A weak random row: the new expert wins only sometimes, so prefixes of varied length stay unchanged.
    rows = {
        i: 0.3 * torch.randn(h, generator=gen) / h**0.5 * layer.router.gate.weight.norm(dim=-1).mean().item()
        for i, layer in layers.items()
    }
    ffn = {i: ExpertFFN(*(torch.randn(s, generator=gen) for s in ((64, h), (64, h), (h, 64)))) for i in layers}
    new = with_top_k(grow_model(old, ffn, rows), 1)
    with_top_k(old, 1)
    ids = torch.randint(0, 384, (6, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = old(ids), new(ids)
    used = torch.stack([(x.indices == 2).any(-1).view(ids.shape) for x in b.aux]).any(0)  # (B, T) any layer
    first = torch.where(used.any(-1), used.float().argmax(-1), torch.full((ids.shape[0],), ids.shape[1]))
    compared = 0
    for row, p in enumerate(first.tolist()):
        # attention carries a changed token into every later position, so only the prefix must match
        torch.testing.assert_close(b.logits[row, :p], a.logits[row, :p], atol=1e-5, rtol=0)
        compared += p
        if p < ids.shape[1]:
            assert (b.logits[row, p] - a.logits[row, p]).abs().max() > 1e-6
    assert compared >= ids.shape[1]  # at least a whole sequence's worth of positions compared


def test_grow_refuses_dense_models_and_missing_bases(
    tiny_llama: Path, moe_dir: Path, bricks: list[Path], domains: list[str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="dense model"):
        grow(tiny_llama, str(bricks[0]), tmp_path / "a", domain=domains[0])
    with pytest.raises(ConfigError, match="unknown domain"):
        grow(moe_dir, str(bricks[0]), tmp_path / "b", domain="no_such_domain")
    (moe_dir / "lmbricks.json").unlink()  # no record of the base: a brick cannot be merged
    with pytest.raises(ConfigError, match="--base"):
        grow(moe_dir, str(bricks[0]), tmp_path / "c", domain=domains[0])
    out = grow(moe_dir, str(bricks[0]), tmp_path / "d", domain=domains[0], base=str(tiny_llama))
    assert (out / "config.json").exists()
    with pytest.raises(ConfigError, match="already exists"):
        grow(moe_dir, str(bricks[0]), out, domain=domains[0], base=str(tiny_llama))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
