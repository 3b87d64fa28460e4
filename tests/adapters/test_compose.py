"""Composition identities: cat is exact, LoraHub one-hot / zero weights, SVD optimality, PEFT parity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmbricks.adapters import load_factors
from lmbricks.adapters.compose import compose, lorahub_factors, svd_compress
from lmbricks.adapters.hub_adapter import AdapterSlot
from lmbricks.errors import ConfigError


def _sum_deltas(bricks, weights, module):
    return sum(w * b[module].delta() for b, w in zip(bricks, weights, strict=False))


def test_cat_is_exact(tiny_bricks: list[Path]) -> None:
    bricks = [load_factors(p) for p in tiny_bricks]
    weights = [0.7, -1.3, 2.0]
    out = compose("cat", bricks, weights)
    assert out.rel_error == 0.0
    for m, pair in out.pairs.items():
        assert pair.rank == 12
        torch.testing.assert_close(pair.delta(), _sum_deltas(bricks, weights, m), rtol=1e-5, atol=1e-6)


def test_svd_is_exact_at_full_rank_and_optimal_below(tiny_bricks: list[Path]) -> None:
    bricks = [load_factors(p) for p in tiny_bricks[:2]]
    exact = compose("svd", bricks, [1.0, 0.5], rank=8)  # sum of ranks: no loss
    assert exact.rel_error < 1e-5
    m = next(iter(bricks[0]))
    delta = _sum_deltas(bricks, [1.0, 0.5], m)
    pair = svd_compress(delta, 3)
    s = torch.linalg.svdvals(delta)
    # Eckart-Young: the residual is exactly the energy of the dropped singular values.
    assert float((delta - pair.delta()).norm()) == pytest.approx(float(s[3:].norm()), rel=1e-4)


def test_lorahub_one_hot_and_zero(tiny_llama: Path, tiny_bricks: list[Path]) -> None:
    from peft import PeftModel

    bricks = [load_factors(p) for p in tiny_bricks]
    ids = torch.randint(0, 384, (2, 12), generator=torch.Generator().manual_seed(0))
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(tiny_bricks[1])).eval()
    with torch.no_grad():
        brick_logits = ref(input_ids=ids).logits
    assert not torch.allclose(brick_logits, base_logits, atol=1e-3)  # the brick does something
    slot = AdapterSlot(AutoModelForCausalLM.from_pretrained(tiny_llama), rank=4, modules=sorted(bricks[0]))
    with torch.no_grad():
        slot.set(lorahub_factors(bricks, [0.0, 1.0, 0.0]))
        torch.testing.assert_close(slot.model(input_ids=ids).logits, brick_logits, rtol=0, atol=1e-5)
        slot.set(lorahub_factors(bricks, [0.0, 0.0, 0.0]))
        torch.testing.assert_close(slot.model(input_ids=ids).logits, base_logits, rtol=0, atol=0)


def test_lorahub_is_quadratic_in_the_weights(tiny_bricks: list[Path]) -> None:
    bricks = [load_factors(p) for p in tiny_bricks[:2]]
    m = next(iter(bricks[0]))
    d = lorahub_factors(bricks, [0.5, 0.5])[m].delta()
    cross = 0.25 * (
        bricks[0][m].scale * bricks[0][m].B @ bricks[1][m].A + bricks[1][m].scale * bricks[1][m].B @ bricks[0][m].A
    )
    expected = 0.25 * (bricks[0][m].delta() + bricks[1][m].delta()) + cross
    torch.testing.assert_close(d, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["cat", "linear", "svd"])
def test_matches_peft_add_weighted_adapter(tiny_llama: Path, tiny_bricks: list[Path], method: str) -> None:
    from peft import PeftModel

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama), str(tiny_bricks[0]), adapter_name="a"
    )
    model.load_adapter(str(tiny_bricks[1]), adapter_name="b")
    weights = [0.6, 1.4]
    model.add_weighted_adapter(
        ["a", "b"], weights, "mix", combination_type=method, svd_rank=4 if method == "svd" else None
    )
    ours = compose(method, [load_factors(tiny_bricks[0]), load_factors(tiny_bricks[1])], weights, rank=4).pairs
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "mix" in module.lora_A:
            key = name.removeprefix("base_model.model.")
            torch.testing.assert_close(module.get_delta_weight("mix"), ours[key].delta(), rtol=1e-4, atol=1e-5)


def test_ties_and_dare_recompress(tiny_bricks: list[Path]) -> None:
    bricks = [load_factors(p) for p in tiny_bricks]
    ties = compose("ties", bricks, [1.0, 1.0, 1.0], density=0.3, rank=4)
    assert all(p.rank == 4 for p in ties.pairs.values()) and 0 < ties.rel_error < 1
    full = compose("dare", bricks, [1.0, 1.0, 1.0], density=1.0, rank=12)  # keep everything: plain sum
    m = next(iter(bricks[0]))
    torch.testing.assert_close(full.pairs[m].delta(), _sum_deltas(bricks, [1, 1, 1], m), rtol=1e-4, atol=1e-5)


def test_bad_inputs(tiny_bricks: list[Path]) -> None:
    bricks = [load_factors(p) for p in tiny_bricks[:2]]
    with pytest.raises(ConfigError, match="unknown compose method"):
        compose("average", bricks)
    with pytest.raises(ConfigError, match="2 bricks"):
        compose("cat", bricks, [1.0])
    with pytest.raises(ConfigError, match="density"):
        compose("ties", bricks, density=1.5)


def test_pipeline_configs_refuse_bad_values_naming_the_field() -> None:
    """ComposeConfig and RouteConfig check their ranges and the method name before any model loads."""
    from lmbricks.adapters.pipeline import ComposeConfig, RouteConfig, configure

    with pytest.raises(
        ConfigError, match=r"^compose options: method: unknown compose method 'svdd' \(did you mean 'svd'"
    ):
        configure(ComposeConfig, bricks=["a"], method="svdd")
    with pytest.raises(ConfigError, match=r"^compose options: density: Input should be less than or equal to 1"):
        configure(ComposeConfig, bricks=["a"], method="ties", density=2.0)
    with pytest.raises(ConfigError, match=r"^compose options: budget: "):
        configure(ComposeConfig, bricks=["a"], method="lorahub", budget=0)
    with pytest.raises(ConfigError, match=r"^route options: top_k: Input should be greater than or equal to 1"):
        configure(RouteConfig, top_k=0)
    with pytest.raises(ConfigError, match=r"^route options: temperature: "):
        configure(RouteConfig, temperature=0.0)
