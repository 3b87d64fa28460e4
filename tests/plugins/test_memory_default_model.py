"""InfLLM on the real default model (SmolLM2-135M, 8k window), tour-sized: a passkey beyond the window."""

from __future__ import annotations

import pytest
import torch

from lmbricks.nn.load import load_model
from lmbricks.plugins.memory.config import InfLLMConfig
from lmbricks.plugins.memory.passkey import PasskeyJob, run_passkey
from lmbricks.plugins.memory.plug import MemoryPlug

pytestmark = pytest.mark.integration

# a small window (256) so that a 768-token prompt is 3x the window and the test stays short
SMALL = InfLLMConfig(sinks=32, window=256, block_size=32, representatives=4, top_k=4, chunk_size=128)


def test_passkey_beyond_the_window_and_plug_unplug() -> None:
    torch.set_num_threads(1)
    model, tok = load_model("smollm2-135m-instruct", dtype=torch.bfloat16)
    model.eval()
    ids = torch.tensor([tok.encode("The pass key is 12345. " + "The sky is blue. " * 60)])
    with torch.no_grad():
        before = model(ids).logits
        with MemoryPlug(model, SMALL):
            for s in range(0, ids.shape[1], 128):
                model(ids[:, s : s + 128])  # the memory fills
        assert torch.equal(model(ids).logits, before)  # unplugged: the base, bit for bit
    job = PasskeyJob(lengths=(768,), depths=(0.5,), methods=("sliding", "infllm"), seed=3)
    result = run_passkey(model, tok, job, SMALL)
    assert result.accuracy("infllm", 768) == 1.0  # the key sits ~370 tokens before the window
    assert result.accuracy("sliding", 768) == 0.0  # the window alone forgot it
