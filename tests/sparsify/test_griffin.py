"""GRIFFIN identities: the statistic, the planted selection, 100% = dense bit for bit, restriction = masking."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.errors import ConfigError
from lmbricks.nn.ffn import GatedFFN, gate_activation
from lmbricks.nn.load import load_model
from lmbricks.nn.model import KVCache
from lmbricks.sparsify.griffin import Griffin, griffin_scores, griffin_select, restrict_gated_ffn


def test_scores_are_column_norms_of_row_normalised_activations() -> None:
    z = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])  # the zero token adds nothing
    # rows normalised: [0.6, 0.8, 0], [0, 0, 1]; column norms 0.6, 0.8, 1
    torch.testing.assert_close(griffin_scores(z), torch.tensor([0.6, 0.8, 1.0]))


def test_selection_on_planted_activations_picks_the_planted_neurons() -> None:
    gen = torch.Generator().manual_seed(0)
    tokens, width = 64, 96
    planted = torch.randperm(width, generator=gen)[:24].sort().values
    z = 0.1 * torch.randn(tokens, width, generator=gen)
    # the planted neurons are large on every token, but on different scales per token: the row
    # normalisation must not let one loud token decide
    scale = torch.logspace(0, 3, tokens)[:, None]
    z[:, planted] += torch.rand(tokens, planted.numel(), generator=gen) + 1.0
    z = z * scale
    assert torch.equal(griffin_select(griffin_scores(z), 0.25), planted)


def test_select_counts_and_order() -> None:
    s = torch.tensor([0.1, 0.9, 0.5, 0.7])
    assert griffin_select(s, 0.5).tolist() == [1, 3]
    assert griffin_select(s, 1.0).tolist() == [0, 1, 2, 3]
    assert griffin_select(s, 0.01).tolist() == [1]  # at least one neuron
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ConfigError, match="keep"):
            griffin_select(s, bad)


def test_restricted_ffn_equals_dense_restricted_to_rows_and_columns() -> None:
    torch.manual_seed(0)
    ffn = GatedFFN(16, 40).double()
    keep = torch.tensor([0, 3, 7, 8, 20, 39])
    x = torch.randn(5, 16, dtype=torch.float64)
    w = ffn.gate_up.weight
    ref = (gate_activation(x @ w[keep].T, "swiglu") * (x @ w[40 + keep].T)) @ ffn.down.weight[:, keep].T
    out, _ = restrict_gated_ffn(ffn, keep)(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def _decode(model: torch.nn.Module, prompt: torch.Tensor, steps: int, keep: float | None) -> torch.Tensor:
    """Logits of ``steps`` greedy decoding steps after a dense prompt, FFNs restricted when keep is given."""
    cache = KVCache(model.cfg.num_layers)
    out = []
    with Griffin(model, keep or 1.0) as g:
        logits = model(prompt, cache=cache).logits[:, -1]
        if keep is not None:
            g.prune()
        for _ in range(steps):
            logits = model(logits.argmax(-1, keepdim=True), cache=cache).logits[:, -1]
            out.append(logits)
    return torch.stack(out)


def test_keeping_everything_equals_dense_bit_for_bit(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    prompt = torch.randint(3, 384, (1, 12), generator=torch.Generator().manual_seed(1))
    dense = _decode(model, prompt, 6, None)
    assert torch.equal(_decode(model, prompt, 6, 1.0), dense)
    assert not torch.equal(_decode(model, prompt, 6, 0.5), dense)


def test_pruned_decode_equals_dense_with_the_other_neurons_masked(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    model = model.double()
    prompt = torch.randint(3, 384, (1, 10), generator=torch.Generator().manual_seed(2))
    nxt = torch.tensor([[5, 9, 17]])
    cache = KVCache(model.cfg.num_layers)
    with Griffin(model, 0.25) as g:
        model(prompt, cache=cache)
        kept = g.prune()
        pruned = model(nxt, cache=cache).logits
    assert all(k.numel() == 16 for k in kept)  # 25% of 64
    # reference: the same dense prompt, then the dense model with every non-kept neuron zeroed at
    # the down projection's input
    masks = [torch.zeros(64, dtype=torch.float64).index_fill_(0, k, 1.0) for k in kept]
    cache = KVCache(model.cfg.num_layers)
    model(prompt, cache=cache)
    handles = [
        block.ffn.down.register_forward_pre_hook(lambda _m, a, m=m: (a[0] * m,))
        for block, m in zip(model.layers, masks, strict=True)
    ]
    ref = model(nxt, cache=cache).logits
    for h in handles:
        h.remove()
    torch.testing.assert_close(pruned, ref, rtol=0, atol=1e-10)


def test_selection_follows_the_prompt_statistic(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    prompt = torch.randint(3, 384, (1, 12), generator=torch.Generator().manual_seed(3))
    acts: list[torch.Tensor] = []
    handles = [b.ffn.down.register_forward_pre_hook(lambda _m, a: acts.append(a[0][0])) for b in model.layers]
    with Griffin(model, 0.5) as g:
        model(prompt[:, :5])  # a prompt prefilled in two chunks counts as one
        model(prompt[:, 5:])
        kept = g.prune()
    for h in handles:
        h.remove()
    for layer, k in enumerate(kept):
        z = torch.cat([acts[layer], acts[len(model.layers) + layer]])  # (12, I)
        assert torch.equal(k, griffin_select(griffin_scores(z), 0.5))


def test_block_restores_the_dense_model(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    ffns = [b.ffn for b in model.layers]
    with Griffin(model, 0.5) as g:
        model(torch.tensor([[4, 5, 6]]))
        g.prune()
        assert all(b.ffn.gate_up.out_features == 64 for b in model.layers)  # 2 x 32 of 64
        g.restore()
        assert [b.ffn for b in model.layers] == ffns
        g.prune(0.25)
        assert all(b.ffn.gate_up.out_features == 32 for b in model.layers)
    assert [b.ffn for b in model.layers] == ffns
    assert all(not b.ffn.down._forward_pre_hooks for b in model.layers)


def test_hf_llama_keeping_everything_equals_dense_bit_for_bit(tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    for p in model.parameters():
        # safetensors leaves the loaded weights at 24 mod 64 bytes, and the GEMM kernel then rounds
        # differently (4.9e-10) from a copy of the same values at an aligned address, so both sides
        # of the comparison get freshly allocated weights
        p.data = p.data.clone()
    prompt = torch.randint(3, 384, (1, 9), generator=torch.Generator().manual_seed(4))
    nxt = torch.tensor([[7]])

    def step(keep: float | None) -> torch.Tensor:
        cache = DynamicCache()
        with torch.no_grad(), Griffin(model, keep or 1.0) as g:
            model(input_ids=prompt, cache=cache)  # transformers 5: `cache`
            if keep is not None:
                g.prune()
            return model(input_ids=nxt, cache=cache).logits

    dense = step(None)
    assert torch.equal(step(1.0), dense)
    half = step(0.5)
    assert not torch.equal(half, dense)
    assert all(layer.mlp.gate_proj.out_features == 64 for layer in model.model.layers)  # restored


def test_bad_uses_are_refused(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    with pytest.raises(ConfigError, match="keep"):
        Griffin(model, 0.0)
    with Griffin(model, 0.5) as g, pytest.raises(ConfigError, match="prompt"):
        g.prune()
    with Griffin(model, 0.5), pytest.raises(ConfigError, match="one prompt at a time"):
        model(torch.tensor([[4, 5], [6, 7]]))
    with pytest.raises(ConfigError, match="no feed-forward block"):
        Griffin(torch.nn.Sequential(torch.nn.Linear(4, 4)), 0.5)
