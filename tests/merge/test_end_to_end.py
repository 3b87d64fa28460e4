"""End to end on the real default model: merge it with a derived variant and load the result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration


def test_merge_default_model_with_a_variant_loads_in_transformers(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmbricks.checkpoint import CheckpointReader, copy_tokenizer, save_state_dict
    from lmbricks.hub import resolve_model
    from lmbricks.merge import merge

    base = resolve_model("smollm2-135m-instruct")
    variant = tmp_path / "variant"
    g = torch.Generator().manual_seed(0)
    with CheckpointReader(base) as r:
        noisy = {
            k: (r.get(k).float() + 1e-3 * torch.randn(r.info(k).shape, generator=g)).to(r.info(k).dtype) for k in r
        }
        save_state_dict(variant, noisy, config=r.config)
    copy_tokenizer(base, variant)
    del noisy

    out = merge(
        {
            "merge_method": "ties",
            "base_model": str(base),
            "models": [
                {"model": str(base), "parameters": {"weight": 0.5, "density": 0.5}},
                {"model": str(variant), "parameters": {"weight": 0.5, "density": 0.5}},
            ],
        },
        tmp_path / "merged",
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    ref = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        a = model(ids).logits[0, -1].float()
        b = ref(ids).logits[0, -1].float()
    assert torch.isfinite(a).all()
    assert int(a.argmax()) == int(b.argmax())  # a small perturbation keeps the prediction
    assert not torch.equal(a, b)  # an unmodified base would pass the line above: the merge moved it
    # values: TIES of (base, variant) on the base keeps the variant's top half of |δ| (δ of the base
    # itself is 0) and divides by its weight alone: θ0 + top_0.5(δ), rounded once to bf16
    from lmbricks.merge.registry import get_method

    ties = get_method("ties").fn
    with CheckpointReader(base) as r0, CheckpointReader(variant) as r1, CheckpointReader(out) as r2:
        for k in (
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.29.self_attn.q_proj.weight",
            "model.layers.15.mlp.up_proj.weight",
            "model.norm.weight",
        ):
            b0, v = r0.get(k), r1.get(k)
            want = ties(b0, [b0, v], weight=[0.5, 0.5], density=[0.5, 0.5]).to(r2.info(k).dtype)
            assert torch.equal(r2.get(k), want), k
            delta = v.float() - b0.float()
            if not bool(delta.any()):  # norm weights near 1: a 1e-3 perturbation rounds away in bf16
                assert torch.equal(r2.get(k), b0), k
                continue
            kept = (r2.get(k).float() - b0.float()) != 0
            assert (
                0 < int(kept.sum()) <= delta.numel() // 2 + 1
                and float(delta.abs()[kept].min()) >= float(delta.abs()[~kept].max()) - 1e-12
            ), k
