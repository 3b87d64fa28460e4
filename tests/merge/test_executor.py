"""Streaming executor: atomic output, crash and disk-full safety, LoRA on the fly, vocabularies."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from lmbricks.checkpoint import CheckpointReader
from lmbricks.errors import CheckpointError
from lmbricks.merge import compute_tensor, merge, parse_recipe, plan_merge
from lmbricks.merge.registry import get_method


def _ties(f: dict[str, Path]) -> dict:
    return {
        "merge_method": "ties",
        "base_model": str(f["base"]),
        "models": [
            {"model": str(f["ft1"]), "parameters": {"weight": 0.5, "density": [1.0, 0.5, 0.3]}},
            {"model": str(f["ft2"]), "parameters": {"weight": 0.5, "density": 0.5}},
        ],
        "parameters": {"int8_mask": True},
    }


def _load(path: Path) -> dict[str, torch.Tensor]:
    with CheckpointReader(path) as r:
        return {k: r.get(k).clone() for k in r}


def test_output_is_complete_and_loadable(family_bf16: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = merge(_ties(family_bf16), tmp_path / "merged", max_shard="20KB")
    files = sorted(p.name for p in out.iterdir())
    assert "model.safetensors.index.json" in files  # small shards forced several files
    assert "tokenizer.json" in files and "config.json" in files
    record = json.loads((out / "lmbricks.json").read_text())
    assert record["recipe"]["merge_method"] == "ties"
    assert len(record["inputs"]) == 3 and all(len(i["sha256"]) == 64 for i in record["inputs"])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.bfloat16
    # values: each tensor is TIES with its own density (ft1's gradient [1.0, 0.5, 0.3] at
    # t = layer / (layers - 1), t = 0 outside the layers), rounded once to bf16
    merged, base = _load(out), _load(family_bf16["base"])
    fts = [_load(family_bf16[k]) for k in ("ft1", "ft2")]
    n_layers = json.loads((family_bf16["base"] / "config.json").read_text())["num_hidden_layers"]
    ties = get_method("ties").fn
    for k, v in merged.items():
        layer = re.match(r"model\.layers\.(\d+)\.", k)
        t = int(layer.group(1)) / (n_layers - 1) if layer else 0.0
        d1 = float(np.interp(t, [0.0, 0.5, 1.0], [1.0, 0.5, 0.3]))
        want = ties(base[k], [fts[0][k], fts[1][k]], weight=[0.5, 0.5], density=[d1, 0.5]).to(torch.bfloat16)
        assert torch.equal(v, want), (k, d1)
    assert any(not torch.equal(merged[k], base[k]) for k in merged)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))


def test_chunked_execution_equals_whole_tensor(family_bf16: dict[str, Path]) -> None:
    plan = plan_merge(parse_recipe(_ties(family_bf16)))
    for tp in plan.tensors:
        whole = compute_tensor(plan, tp, block=1 << 30)
        blocks = compute_tensor(plan, tp, block=100)
        torch.testing.assert_close(blocks, whole, rtol=0, atol=0)


def test_write_failure_leaves_no_partial_output(
    family_bf16: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmbricks.checkpoint import ShardedWriter

    calls = {"n": 0}
    real_add = ShardedWriter.add

    def full_disk(self: ShardedWriter, name: str, tensor: torch.Tensor) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_add(self, name, tensor)

    monkeypatch.setattr(ShardedWriter, "add", full_disk)
    out = tmp_path / "merged"
    with pytest.raises(CheckpointError, match="disk full"):
        merge(_ties(family_bf16), out)
    assert calls["n"] == 5
    assert list(tmp_path.iterdir()) == []  # neither output nor temp dir


def test_sigkill_leaves_no_output_directory(family_bf16: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(_ties(family_bf16)))
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from lmbricks.checkpoint import ShardedWriter
        from lmbricks.merge import merge
        real = ShardedWriter.add
        def slow(self, name, t):
            real(self, name, t)
            print("wrote", name, flush=True)
            time.sleep(0.2)
        ShardedWriter.add = slow
        merge(json.load(open({str(recipe)!r})), {str(out)!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("wrote")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()


def test_lora_applied_on_the_fly_matches_peft(family: dict[str, Path], tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base_dir = family["ft1"]
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    torch.manual_seed(0)
    pm = peft.get_peft_model(model, cfg)
    adapter = tmp_path / "adapter"
    pm.save_pretrained(adapter)
    merged = pm.merge_and_unload()
    want = {k: v.detach() for k, v in merged.state_dict().items()}

    out = merge(
        {
            "merge_method": "linear",
            "models": [{"model": f"{base_dir}+{adapter}", "parameters": {"weight": 1.0}}],
        },
        tmp_path / "out",
    )
    got = _load(out)
    changed = 0
    for k, v in got.items():
        torch.testing.assert_close(v, want[k], rtol=1e-5, atol=1e-6)
        changed += int(not torch.equal(v, _load(base_dir)[k]))
    assert changed == 3 * 4  # three targets in four layers
    assert not any(p.name.endswith(".safetensors") for p in adapter.parent.glob("*merged*"))


def test_tokenizer_source_union_permutes_and_fills_rows(family: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from lmbricks.testing import build_tiny_tokenizer

    # a fine-tune whose tokenizer gains two tokens (and whose embedding has two more rows)
    ft = tmp_path / "ft_more"
    import shutil

    shutil.copytree(family["ft1"], ft)
    tok = build_tiny_tokenizer()
    tok.add_tokens(["<extra_a>", "<extra_b>"])
    tok.save_pretrained(ft)
    sd = _load(ft)
    v = len(tok.get_vocab())
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        extra = torch.randn(v - sd[k].shape[0], sd[k].shape[1])
        sd[k] = torch.cat([sd[k], extra])
    from safetensors.torch import save_file

    save_file(sd, ft / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((ft / "config.json").read_text())
    cfg["vocab_size"] = v
    (ft / "config.json").write_text(json.dumps(cfg))

    recipe = {
        "merge_method": "linear",
        "base_model": str(family["base"]),
        "models": [
            {"model": str(family["base"]), "parameters": {"weight": 0.5}},
            {"model": str(ft), "parameters": {"weight": 0.5}},
        ],
        "tokenizer_source": "union",
    }
    out = merge(recipe, tmp_path / "out")
    got = _load(out)
    out_tok = AutoTokenizer.from_pretrained(out)
    out_vocab = out_tok.get_vocab()
    assert json.loads((out / "config.json").read_text())["vocab_size"] == len(out_vocab) == v
    base_sd = _load(family["base"])
    ft_vocab = tok.get_vocab()
    for token in ("<extra_a>", "<extra_b>"):
        j = out_vocab[token]
        # only the fine-tune has it: its row fills the base's, so the average is that row
        torch.testing.assert_close(
            got["model.embed_tokens.weight"][j], sd["model.embed_tokens.weight"][ft_vocab[token]]
        )
    j = out_vocab["e"]
    ref = 0.5 * base_sd["model.embed_tokens.weight"][j] + 0.5 * sd["model.embed_tokens.weight"][ft_vocab["e"]]
    torch.testing.assert_close(got["model.embed_tokens.weight"][j], ref)


def test_same_seed_same_output(family_bf16: dict[str, Path], tmp_path: Path) -> None:
    recipe = {
        "merge_method": "dare_ties",
        "base_model": str(family_bf16["base"]),
        "models": [
            {"model": str(family_bf16["ft1"]), "parameters": {"weight": 0.5, "density": 0.5}},
            {"model": str(family_bf16["ft2"]), "parameters": {"weight": 0.5, "density": 0.5}},
        ],
        "parameters": {"seed": 7},
    }
    a = _load(merge(recipe, tmp_path / "a"))
    b = _load(merge(recipe, tmp_path / "b"))
    recipe["parameters"]["seed"] = 8
    c = _load(merge(recipe, tmp_path / "c"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_streamed_chunked_merge_equals_unchunked(family_bf16: dict[str, Path], tmp_path: Path) -> None:
    from lmbricks.merge import execute

    plan = plan_merge(parse_recipe(_ties(family_bf16)))
    small = _load(execute(plan, tmp_path / "small_blocks", block=100))  # worker threads, inference mode
    whole = _load(execute(plan, tmp_path / "one_block", block=1 << 30))
    assert all(torch.equal(small[k], whole[k]) for k in whole)
