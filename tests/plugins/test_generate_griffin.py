"""``lmbricks generate --griffin KEEP``: GRIFFIN's per-sequence FFN selection while generating greedily."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from lmbricks.cli.main import app
from lmbricks.nn.load import load_model
from lmbricks.nn.model import KVCache
from lmbricks.plugins.memory.generate import generate
from lmbricks.sparsify.griffin import Griffin

runner = CliRunner()
PROMPT = "the quick brown fox jumps over the lazy dog. " * 6


def _cli(model: Path, prompt: Path, *extra: str) -> dict:
    got = runner.invoke(app, ["generate", str(model), "--prompt-file", str(prompt), "--max-new-tokens", "6",
                              "--precision", "fp32", "--json", *extra])  # fmt: skip
    assert got.exit_code == 0, got.output
    return json.loads(got.stdout)


def test_keeping_every_neuron_is_the_plain_model(tiny_llama: Path, tmp_path: Path) -> None:
    prompt = tmp_path / "p.txt"
    prompt.write_text(PROMPT)
    plain = _cli(tiny_llama, prompt, "--memory", "none")
    assert _cli(tiny_llama, prompt, "--memory", "none", "--griffin", "1.0")["tokens"] == plain["tokens"]
    refused = runner.invoke(app, ["generate", str(tiny_llama), "--prompt-file", str(prompt), "--griffin", "0.5"])
    assert refused.exit_code == 2 and "--memory none" in refused.output and "Traceback" not in refused.output
    bad = runner.invoke(app, ["generate", str(tiny_llama), "--prompt-file", str(prompt), "--memory", "none",
                              "--griffin", "1.5"])  # fmt: skip
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_generation_decodes_with_the_prompts_selection(tiny_llama: Path) -> None:
    lm, tokenizer = load_model(str(tiny_llama), dtype=torch.float32)
    lm.eval()
    ids = torch.tensor([tokenizer.encode(PROMPT)])  # (1, T)
    got = generate(lm, ids, None, max_new_tokens=6, griffin=0.25).tokens
    # the same steps written out: a dense prefill into the cache, the selection, then cached greedy steps
    want, pruned_vs_dense = [], []
    with torch.no_grad(), Griffin(lm, 0.25) as g:
        cache = KVCache(lm.cfg.num_layers)
        logits = lm(ids, cache=cache).logits[0, -1]
        g.prune()
        for _ in range(6):
            want.append(int(logits.argmax()))
            step = torch.tensor([[want[-1]]])
            pruned_vs_dense.append(logits)
            logits = lm(step, cache=cache).logits[0, -1]
    assert got == want
    # the selection is in effect: the dense model's first decode step differs from the pruned one
    with torch.no_grad():
        dense_cache = KVCache(lm.cfg.num_layers)
        lm(ids, cache=dense_cache)
        dense_step = lm(torch.tensor([[want[0]]]), cache=dense_cache).logits[0, -1]
    assert not torch.allclose(dense_step, pruned_vs_dense[1])
