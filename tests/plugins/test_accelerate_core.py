"""Identities of the acceleration plug-in (Variator) on a tiny LM."""

from __future__ import annotations

import pytest
import torch

from lmbricks.errors import ConfigError
from lmbricks.nn.config import LMConfig
from lmbricks.nn.model import LM
from lmbricks.plugins.accelerate.forward import compressed_logits, prefill_logits, source_groups, split_point
from lmbricks.plugins.accelerate.layers import AcceleratePlugin
from lmbricks.plugins.accelerate.train import distill, distill_loss


def _lm(layers: int = 4, init_std: float = 0.02) -> LM:
    torch.manual_seed(0)
    cfg = LMConfig(
        vocab_size=64,
        hidden_size=32,
        num_layers=layers,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=64,
        init_std=init_std,
    )
    return LM(cfg).eval()


def _random_plugin(ratio: int, layer: int = 2) -> AcceleratePlugin:
    torch.manual_seed(1)
    plugin = AcceleratePlugin(32, ratio, layer, 16)
    for p in plugin.parameters():  # non-zero output matrices: the layers really mix
        torch.nn.init.normal_(p, std=0.2)
    return plugin


def test_identity_plugin_at_ratio_one_is_the_plain_model() -> None:
    model, ids = _lm(), torch.randint(0, 64, (2, 13))
    plain = model(ids).logits
    got = compressed_logits(model, AcceleratePlugin(32, 1, 2, 16), ids)
    assert torch.allclose(got, plain, atol=1e-6, rtol=0)
    assert not torch.allclose(compressed_logits(model, _random_plugin(1), ids), plain, atol=1e-3)


@pytest.mark.parametrize("ratio", [2, 3, 4])
@pytest.mark.parametrize("keep_last", [0, 3])
def test_logits_at_t_do_not_see_later_tokens(ratio: int, keep_last: int) -> None:
    model, plugin = _lm(), _random_plugin(ratio)
    ids = torch.randint(0, 64, (1, 17))
    base = compressed_logits(model, plugin, ids, keep_last)
    for t in range(16):
        changed = ids.clone()
        changed[0, t + 1 :] = (changed[0, t + 1 :] + 7) % 64
        other = compressed_logits(model, plugin, changed, keep_last)
        assert torch.allclose(other[0, : t + 1], base[0, : t + 1], atol=1e-5), f"position {t} saw a later token"
    assert not torch.allclose(base, model(ids).logits, atol=1e-3)  # the plug-in is really in the path


def test_prefill_equals_the_last_position_of_the_full_pass() -> None:
    model, ids = _lm(), torch.randint(0, 64, (1, 12))
    for ratio in (2, 3, 5):
        plugin = _random_plugin(ratio)
        full = compressed_logits(model, plugin, ids)[:, -1]
        assert torch.allclose(prefill_logits(model, plugin, ids), full, atol=1e-5)
    assert torch.allclose(prefill_logits(model, None, ids), model(ids).logits[:, -1], atol=1e-6)


def test_groups_and_split_point() -> None:
    assert split_point(10, 4, 0) == 8 and split_point(10, 4, 3) == 4 and split_point(2, 4, 5) == 0
    assert source_groups(6, 2).tolist() == [-1, 0, 0, 1, 1, 2]


def test_distillation_lowers_the_loss_and_leaves_the_base_untouched() -> None:
    model = _lm(init_std=0.3)  # peaked logits: something to distil
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = model(torch.arange(16)[None] % 64).logits
    torch.manual_seed(2)
    batches = torch.randint(0, 64, (40, 4, 16))
    plugin = AcceleratePlugin(32, 2, 2, 16)
    first = float(distill_loss(model, plugin, batches[0], 4).detach())
    out = distill(model, plugin, batches, keep_last=4, lr=3e-3)
    assert float(distill_loss(model, plugin, batches[0], 4).detach()) < 0.95 * first
    assert len(out.losses) == 40
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(model(torch.arange(16)[None] % 64).logits, plain)  # unplugged: the base bit for bit


def test_a_plugin_for_another_shape_is_refused() -> None:
    with pytest.raises(ConfigError, match="hidden_size"):
        distill(_lm(), AcceleratePlugin(48, 2, 2, 16), torch.zeros(1, 1, 8, dtype=torch.long), 0)
    with pytest.raises(ConfigError, match="layer 4"):
        distill(_lm(), AcceleratePlugin(32, 2, 4, 16), torch.zeros(1, 1, 8, dtype=torch.long), 0)


def test_flops_and_truncation_budget() -> None:
    from lmbricks.plugins.accelerate.measure import prefill_flops, truncated_context

    model = _lm(layers=10)
    plain = prefill_flops(model, 64, None)
    half = prefill_flops(model, 64, AcceleratePlugin(32, 2, 2, 16))
    quarter = prefill_flops(model, 64, AcceleratePlugin(32, 4, 2, 16))
    assert quarter < half < plain and half > 0.5 * plain * 0.8 * 0.9
    # r = 1 compresses nothing: the plain model may read the whole prompt for the same work
    assert truncated_context(model, AcceleratePlugin(32, 1, 2, 16), 32, 8) == 24
    # layers 2..9 at half the prefix: (2 * 32 + 8 * (12 + 8)) / 10 - 8 = 14.4 -> 14 tokens of context
    assert truncated_context(model, AcceleratePlugin(32, 2, 2, 16), 32, 8) == 14


def test_bits_per_byte_of_an_identity_plugin_equal_the_plain_model() -> None:
    from lmbricks.plugins.accelerate.measure import window_bits

    model, ids = _lm(), torch.randint(0, 64, (1, 24))
    bits = window_bits(model, AcceleratePlugin(32, 1, 2, 16), ids, 8)
    assert bits["plugin"] == pytest.approx(bits["plain"], rel=1e-5)
    assert bits["plugin_all"] == pytest.approx(bits["plain_all"], rel=1e-5)
    assert bits["truncated"] == pytest.approx(bits["plain"], rel=1e-5)  # r = 1: the same work reads everything
    lossy = window_bits(model, _random_plugin(2), ids, 8)
    assert lossy["plugin"] != pytest.approx(lossy["plain"], rel=1e-3)


def test_weighted_kl_is_the_plain_mean_at_weight_one_and_the_tail_mean_at_zero() -> None:
    from lmbricks.plugins.accelerate.train import weighted_kl

    kl = torch.tensor([[4.0, 2.0, 1.0, 3.0], [0.0, 2.0, 5.0, 1.0]])  # (B, T): two prefix positions, two tail
    assert float(weighted_kl(kl, 2, 1.0)) == pytest.approx(18 / 8)
    assert float(weighted_kl(kl, 2, 0.0)) == pytest.approx(10 / 4)
    assert float(weighted_kl(kl, 2, 0.5)) == pytest.approx((0.5 * 8 + 10) / (2 * 3))


def test_distill_loss_at_weight_one_is_the_mean_kl_of_the_full_compressed_pass() -> None:
    import torch.nn.functional as F

    model, plugin = _lm(init_std=0.3), _random_plugin(2)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        teacher = model(ids).logits.float().log_softmax(-1)
        student = compressed_logits(model, plugin, ids, 4).float().log_softmax(-1)
        kl = F.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)  # (B, T)
        assert float(distill_loss(model, plugin, ids, 4)) == pytest.approx(float(kl.mean()), rel=1e-5)
        assert float(distill_loss(model, plugin, ids, 4, 0.0)) == pytest.approx(float(kl[:, 12:].mean()), rel=1e-5)
