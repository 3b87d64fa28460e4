"""Cached greedy decoding after a compressed prefill equals re-running the compressed pass at every step."""

from __future__ import annotations

import pytest
import torch

from lmbricks.nn.config import LMConfig
from lmbricks.nn.model import LM
from lmbricks.plugins.accelerate.forward import compressed_logits
from lmbricks.plugins.accelerate.generate import greedy
from lmbricks.plugins.accelerate.layers import AcceleratePlugin


def _lm() -> LM:
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=64, hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=64,
                   init_std=0.3)  # fmt: skip
    return LM(cfg).eval()


def _plugin(ratio: int) -> AcceleratePlugin:
    torch.manual_seed(1)
    plugin = AcceleratePlugin(32, ratio, 2, 16)
    for p in plugin.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return plugin


def _recomputed(model: LM, plugin: AcceleratePlugin, ids: torch.Tensor, n: int, keep_last: int) -> list[int]:
    """The slow reference: the whole compressed pass again for every new token, the new tokens uncompressed."""
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            seq = torch.cat([ids, torch.tensor([out], dtype=torch.long)], dim=1)
            logits = compressed_logits(model, plugin, seq, keep_last + len(out))
            out.append(int(logits[0, -1].argmax()))
    return out


@pytest.mark.parametrize("ratio", [2, 3])
@pytest.mark.parametrize("length", [12, 13])
@pytest.mark.parametrize("keep_last", [0, 1])
def test_cached_decoding_equals_the_recomputed_compressed_pass(ratio: int, length: int, keep_last: int) -> None:
    model, plugin = _lm(), _plugin(ratio)
    ids = torch.randint(0, 64, (1, length), generator=torch.Generator().manual_seed(length))
    got = greedy(model, plugin, ids, 8, keep_last=keep_last)
    assert got == _recomputed(model, plugin, ids, 8, keep_last)
    assert got != greedy(model, None, ids, 8)  # the plug-in is really in the path


def test_without_a_plugin_it_is_the_models_own_greedy_decoding_and_stops_when_asked() -> None:
    model, ids = _lm(), torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(3))
    reference = model.generate(ids, 6)[0, 10:].tolist()
    assert greedy(model, None, ids, 6) == reference
    assert greedy(model, None, ids, 6, stop=lambda out: len(out) == 2) == reference[:2]
