"""Router initialisation maths and the router-input statistics they read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.grow import gates as G
from lmbricks.grow.hidden import domain_blocks, mean_router_inputs, prompt_router_inputs
from lmbricks.nn import load_model


def test_prompt_rows_are_normalised_differences() -> None:
    pos = [torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 1.0]])]
    neg = [torch.tensor([[3.0, 0.0]]), None]
    rows = G.prompt_rows(pos, neg)  # (L=1, E=2, H=2)
    torch.testing.assert_close(rows[0, 0], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(rows[0, 1], torch.tensor([1.0, 1.0]) / 2**0.5)


def test_centring_removes_the_shared_component() -> None:
    gen = torch.Generator().manual_seed(0)
    common = torch.randn(64, generator=gen) * 10  # every domain's mean shares a large component
    distinct = torch.randn(4, 64, generator=gen)
    means = (common + distinct)[:, None, :]  # (E=4, L=1, H)
    raw = G.domain_rows(means, center=False)
    centred = G.domain_rows(means, center=True)
    assert G.collinear_pairs(raw, [0], 0.9)  # the shared component makes raw rows nearly collinear
    assert not G.collinear_pairs(centred, [0], 0.9)
    torch.testing.assert_close(centred.norm(dim=-1), torch.ones(1, 4))
    expected = distinct - distinct.mean(0)
    torch.testing.assert_close(centred[0], expected / expected.norm(dim=-1, keepdim=True))


def test_collinearity_report_names_layer_and_experts() -> None:
    rows = torch.eye(3)[None].repeat(2, 1, 1)  # orthogonal rows in both layers
    rows[1, 2] = torch.tensor([0.99, 0.14, 0.0])  # layer 1: expert 2 almost expert 0
    found = G.collinear_pairs(rows, [5, 7], 0.9)
    assert [(c.layer, c.experts) for c in found] == [(7, (0, 2))] and found[0].cosine > 0.98
    msg = G.describe_collinearity(found, ["code", "maths", "prose"], 2)
    assert "layer 7" in msg and "'code'" in msg and "'prose'" in msg


def test_random_rows_and_rescaling() -> None:
    gen = torch.Generator().manual_seed(0)
    r = G.random_rows(3, 4, 16, gen, "random")
    torch.testing.assert_close(r.norm(dim=-1), torch.ones(3, 4))
    u = G.random_rows(3, 4, 16, gen, "uniform_random")
    assert u.abs().max() <= 1 / 4 and u.std() > 0
    ref = torch.randn(3, 4, 16, generator=gen) * 3
    scaled = G.scale_to(torch.randn(3, 1, 16, generator=gen), ref)
    torch.testing.assert_close(scaled[:, 0].norm(dim=-1), ref.norm(dim=-1).mean(-1))


def test_router_inputs_are_the_ffn_norm_outputs(tiny_llama: Path) -> None:
    model, tok = load_model(tiny_llama)
    block0 = model.layers[0]
    with torch.no_grad():
        block0.attn.o.weight.zero_()  # layer 0 attention adds nothing: its FFN input is norm(embedding)
    ids = torch.randint(0, 384, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = block0.ffn_norm(model.embed(ids)).reshape(-1, model.cfg.hidden_size).mean(0)
    got = mean_router_inputs(model, ids, batch_size=1)  # (L, H)
    assert got.shape == (2, model.cfg.hidden_size)
    torch.testing.assert_close(got[0], expected, atol=1e-6, rtol=0)
    last = prompt_router_inputs(model, tok, ["hello there", "def main"])
    with torch.no_grad():
        rows = []
        for p in ["hello there", "def main"]:
            pid = torch.tensor([[tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"]])
            rows.append(block0.ffn_norm(model.embed(pid))[0, -1])
    torch.testing.assert_close(last[0], torch.stack(rows).mean(0), atol=1e-6, rtol=0)


def test_domain_blocks_sample_many_documents(tiny_llama: Path) -> None:
    from lmbricks.testing import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    docs = [f"document number {i} " * 200 for i in range(20)]
    blocks = domain_blocks(tok, docs, max_tokens=512, seq_len=64, seed=0)
    text = tok.decode(blocks.reshape(-1).tolist())
    assert blocks.shape == (8, 64)
    assert len({w for w in text.split() if w.isdigit()}) > 1  # not all from the first document
    with pytest.raises(ValueError):
        domain_blocks(tok, ["hi"], max_tokens=512, seq_len=64)


def test_load_lm_with_a_brick_equals_the_merged_weights(tiny_llama: Path, bricks: list[Path]) -> None:
    from lmbricks.grow.sources import load_lm
    from lmbricks.merge.lora import LoraAdapter

    base, _ = load_model(tiny_llama)
    model, tok = load_lm(f"{tiny_llama}+{bricks[0]}")
    lora = LoraAdapter(bricks[0])
    q = base.layers[1].attn.qkv.weight[: base.cfg.hidden_size] + lora.delta("model.layers.1.self_attn.q_proj.weight")
    torch.testing.assert_close(model.layers[1].attn.qkv.weight[: base.cfg.hidden_size], q, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.norm.weight, base.norm.weight)
    assert tok is not None
