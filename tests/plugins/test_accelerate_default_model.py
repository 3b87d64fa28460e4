"""An acceleration plug-in on the real default model (SmolLM2-135M), tour-sized: identity, causality, saving."""

from __future__ import annotations

import pytest
import torch

from lmbricks.nn.load import load_model
from lmbricks.plugins.accelerate.forward import compressed_logits, prefill_logits
from lmbricks.plugins.accelerate.layers import AcceleratePlugin
from lmbricks.plugins.accelerate.measure import prefill_flops
from lmbricks.plugins.accelerate.train import distill

pytestmark = pytest.mark.integration


def test_identity_causality_and_base_untouched_on_the_default_model() -> None:
    torch.set_num_threads(1)
    model, tok = load_model("smollm2-135m-instruct", dtype=torch.bfloat16)
    model.eval()
    ids = torch.tensor([tok.encode("Emma Woodhouse, handsome, clever, and rich, with a comfortable home " * 6)])
    with torch.no_grad():
        plain = model(ids).logits
        same = compressed_logits(model, AcceleratePlugin(576, 1, 6, 64), ids)
    assert torch.allclose(same.float(), plain.float(), atol=1e-2)  # r = 1, fresh: the plain model (bf16)
    plugin = AcceleratePlugin(576, 2, 6, 64)
    distill(model, plugin, ids[:, :48].reshape(1, 1, 48).repeat(2, 1, 1), keep_last=16, lr=1e-3)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain)  # the base is untouched, bit for bit
        a = compressed_logits(model, plugin, ids, 8)
        changed = ids.clone()
        changed[0, 20:] = tok.encode(" x")[0]
        b = compressed_logits(model, plugin, changed, 8)
        assert torch.allclose(a[0, :20].float(), b[0, :20].float(), atol=1e-2)  # nothing after t is seen
        assert torch.allclose(
            prefill_logits(model, plugin, ids[:, :40]).float(),
            compressed_logits(model, plugin, ids[:, :40])[:, -1].float(),
            atol=2e-2,
        )
    assert prefill_flops(model, 1024, plugin) < 0.62 * prefill_flops(model, 1024, None)
