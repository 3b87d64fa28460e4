"""``lmbricks generate`` and ``lmbricks plugins memory eval`` on a tiny Llama; refusals are one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmbricks.cli.main import app
from lmbricks.nn.load import load_model
from lmbricks.plugins.memory.config import InfLLMConfig
from lmbricks.plugins.memory.generate import generate
from lmbricks.plugins.memory.passkey import PasskeyJob, first_number, needle_prompt

runner = CliRunner()
SMALL = ["--window", "64", "--chunk-size", "16", "--top-k", "2"]


@pytest.fixture()
def prompt(tmp_path: Path) -> Path:
    f = tmp_path / "long.txt"
    f.write_text("the quick brown fox jumps over the lazy dog. " * 30)
    return f


def test_generate_prints_the_greedy_completion(tiny_llama: Path, prompt: Path) -> None:
    """stdout is exactly the memory-backed greedy completion the API gives."""
    res = runner.invoke(app, ["generate", str(tiny_llama), "--prompt-file", str(prompt), "--max-new-tokens", "5",
                              "--precision", "fp32", "--json", *SMALL])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    model, tok = load_model(tiny_llama)
    ids = torch.tensor(tok.encode(prompt.read_text()))
    want = generate(model.eval(), ids, InfLLMConfig(window=64, chunk_size=16, top_k=2), 5, tok.eos_token_id)
    assert got["tokens"] == want.tokens and got["prompt_tokens"] == len(ids) > 64
    assert got["blocks"] == want.blocks > 0


def test_generate_refuses_bad_inputs(tiny_llama: Path, prompt: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["generate", str(tiny_llama), "--prompt-file", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 2 and "nope.txt: no such file" in missing.output
    too_wide = runner.invoke(app, ["generate", str(tiny_llama), "--prompt-file", str(prompt), "--window", "4096"])
    assert too_wide.exit_code == 2 and "max_position_embeddings = 256" in too_wide.output
    unknown = runner.invoke(app, ["generate", str(tiny_llama), "--prompt-file", str(prompt), "--memory", "vast"])
    assert unknown.exit_code == 2 and "--memory" in unknown.output
    assert "Traceback" not in missing.output + too_wide.output + unknown.output


def test_memory_eval_writes_trials_and_heat_maps(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "passkey"
    args = ["plugins", "memory", "eval", str(tiny_llama), "--lengths", "180,240", "--depths", "0,1",
            "--methods", "plain,infllm", *SMALL, "--precision", "fp32", "--out", str(out)]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == 2 * 2 * 2 and {t["length"] for t in trials} == {180, 240}
    assert (out / "infllm_passkey_infllm.png").stat().st_size > 0 and (out / "lmbricks.json").exists()
    again = runner.invoke(app, args)  # an existing output without --force is refused, untouched
    assert again.exit_code == 2 and "Traceback" not in again.output
    bad = runner.invoke(app, ["plugins", "memory", "eval", str(tiny_llama), "--lengths", "4k"])
    assert bad.exit_code == 2 and "--lengths" in bad.output


def test_needle_prompt_places_the_key_at_the_depth(tiny_llama: Path) -> None:
    _, tok = load_model(tiny_llama)
    filler = tok.encode("grass sky sun " * 200, add_special_tokens=False)
    needle = tok.encode("The pass key is 12345. Remember it. 12345 is the pass key. ", add_special_tokens=False)
    starts = []
    for depth in (0.0, 0.5, 1.0):
        ids = needle_prompt(tok, filler, 300, depth, "12345", "synthetic")
        assert len(ids) == 300 and tok.decode(ids).count("12345") == 2
        starts.append(next(i for i in range(300) if ids[i : i + len(needle)] == needle))
    room = starts[2] - starts[0]  # the filler's length: the key moves across all of it
    assert room > 100 and starts[1] - starts[0] == round(0.5 * room)
    assert first_number(" 12345. ") == "12345" and first_number("none") == ""
    assert PasskeyJob().lengths == (4096, 16384, 32768)
