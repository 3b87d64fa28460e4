"""Parity with transformers' sparse MoE blocks (tiny configs, fp32, 1e-5)."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2MoeConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock

from lmbricks.moe import Experts, moe_config_from_hf, moe_from_hf_block
from lmbricks.testing import tiny_mixtral_config


def _randomise(block: torch.nn.Module, seed: int = 0) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.2)


def _check(block: torch.nn.Module, hf_config, shape=(3, 7)) -> None:
    layer = moe_from_hf_block(block, hf_config)
    torch.manual_seed(1)
    x = torch.randn(*shape, hf_config.hidden_size)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = block(x_ref)
    y, aux = layer(x_ours)
    assert torch.allclose(y, ref, atol=1e-5, rtol=0), float((y - ref).abs().max())
    upstream = torch.randn_like(ref)
    (ref * upstream).sum().backward()
    (y * upstream).sum().backward()
    assert torch.allclose(x_ours.grad, x_ref.grad, atol=1e-5)
    assert torch.allclose(layer.router.gate.weight.grad, block.gate.weight.grad, atol=1e-4)
    hf_grad = Experts.from_hf(block.experts.gate_up_proj.grad, block.experts.down_proj.grad)
    assert torch.allclose(layer.experts.gate_up.grad, hf_grad.gate_up, atol=1e-4)


@pytest.mark.parametrize("impl", ["eager", "grouped_mm"])
def test_mixtral_block_parity(impl: str) -> None:
    cfg = tiny_mixtral_config()
    cfg._experts_implementation = impl
    block = MixtralSparseMoeBlock(cfg)
    _randomise(block)
    assert moe_config_from_hf(cfg).renormalize
    _check(block, cfg)


def test_qwen2_moe_block_parity_shared_expert_no_renormalisation() -> None:
    cfg = Qwen2MoeConfig(
        hidden_size=32,
        moe_intermediate_size=48,
        shared_expert_intermediate_size=64,
        num_experts=6,
        num_experts_per_tok=2,
        norm_topk_prob=False,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    cfg._experts_implementation = "eager"
    block = Qwen2MoeSparseMoeBlock(cfg)
    _randomise(block, seed=2)
    mcfg = moe_config_from_hf(cfg)
    assert not mcfg.renormalize and mcfg.shared_expert_intermediate_size == 64
    _check(block, cfg)


def test_experts_hf_layout_round_trip() -> None:
    torch.manual_seed(0)
    experts = Experts(3, 8, 12)
    hf = experts.to_hf()
    assert hf["gate_up_proj"].shape == (3, 24, 8) and hf["down_proj"].shape == (3, 8, 12)
    back = Experts.from_hf(hf["gate_up_proj"], hf["down_proj"])
    assert torch.equal(back.gate_up, experts.gate_up) and torch.equal(back.down, experts.down)


def test_moe_fields_from_config_json_name_a_missing_key() -> None:
    """One table of config.json keys: Qwen2-MoE may leave the shared expert out; a missing key is named."""
    import pytest

    from lmbricks.errors import ConfigError
    from lmbricks.moe import moe_fields_from_hf

    qwen = {"model_type": "qwen2_moe", "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8}
    assert moe_fields_from_hf(qwen) == {
        "router": "softmax_topk",
        "num_experts": 4,
        "top_k": 2,
        "intermediate_size": 8,
        "shared_expert_intermediate_size": 0,
        "renormalize": False,
    }
    with pytest.raises(ConfigError, match="mixtral model has no 'num_local_experts'"):
        moe_fields_from_hf({"model_type": "mixtral", "num_experts_per_tok": 2, "intermediate_size": 8})
