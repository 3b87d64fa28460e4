"""A LoRA brick trained by ``lmbricks train`` (``lora:`` section, task sft) on a tiny Llama.

Only the LoRA factors change; the saved PEFT adapter loads with ``peft.PeftModel`` on the Hugging
Face base and reproduces the trained model's logits; fused q/k/v and gate/up factors are saved as
separate Hugging Face modules sharing A; resuming gives the same factors as an uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lmbricks.errors import ConfigError
from lmbricks.sft import write_jsonl
from lmbricks.sft.schema import Example
from lmbricks.train import parse_config, train
from lmbricks.train.lora import ADAPTER_DIR, attach_lora, load_lora_checkpoint


def _chat(*turns: str) -> Example:
    roles = ["user", "assistant"]
    return Example(messages=tuple({"role": roles[i % 2], "content": t} for i, t in enumerate(turns)), where="test")


def _config(tmp: Path, base: Path, steps: int = 6, **lora: Any) -> Any:
    chats = [
        _chat("hello there", "hi, how are you?"),
        _chat("What is 2 + 2?", "2 + 2 = 4"),
        _chat("Bonjour le monde", "Hallo Welt. The quick brown fox."),
        _chat("def main(): return 1", "It returns 1."),
    ]
    data = write_jsonl(chats * 3, tmp / "train.jsonl")
    held = write_jsonl(chats[:2], tmp / "held.jsonl")
    return parse_config(
        {
            "task": "sft",
            "init_from": str(base),
            "sft": {"jsonl": [str(data)], "eval_jsonl": [str(held)], "seq_len": 96, "generations": 0},
            "lora": {"rank": 4, "alpha": 8, **lora},
            "steps": steps,
            "batch_size": 2,
            "optim": {"lr": 2e-2, "weight_decay": 0.0},
            "schedule": {"kind": "constant"},
            "checkpoint_every": 3,
            "threads": 1,
            "precision": "fp32",
            "device": "cpu",
        }
    )


def _trained(cfg: Any, ckpt: Path) -> Any:
    """The trained model as the loop held it: the base with the checkpoint's exact LoRA factors."""
    from lmbricks.nn.load import load_model

    lm, _ = load_model(cfg.init_from, dtype=torch.float32, hf_fallback=False)
    attach_lora(lm, cfg.lora, cfg.seed)
    load_lora_checkpoint(lm, ckpt)
    return lm.eval()


def test_lora_sft_trains_only_the_brick_and_peft_reproduces_it(tiny_llama: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from lmbricks.nn.load import load_model

    cfg = _config(tmp_path, tiny_llama)
    result = train(cfg, tmp_path / "run", report=False)
    assert result.final_checkpoint is not None
    stats = json.loads((tmp_path / "run" / "sft_data.json").read_text())
    assert stats["lora_modules"] == 8 and 0 < stats["trainable"] < stats["frozen"] / 2

    # only the LoRA factors changed: the merged model differs from the base by a rank <= 4 update in
    # exactly the adapted matrices; norms and embeddings are untouched.
    base, _ = load_model(tiny_llama, dtype=torch.float32, hf_fallback=False)
    merged, _ = load_model(result.final_checkpoint, dtype=torch.float32, hf_fallback=False)
    b, m = dict(base.named_parameters()), dict(merged.named_parameters())
    for name, p in m.items():
        delta = p.detach() - b[name].detach()
        if any(t in name for t in ("attn.qkv", "attn.o", "ffn.gate_up", "ffn.down")):
            assert delta.abs().max() > 0, name
            assert int(torch.linalg.matrix_rank(delta, atol=1e-6)) <= 4, name
        else:
            assert torch.equal(p, b[name]), name

    # the adapter: Hugging Face module names, q/k/v (and gate/up) share A, PEFT reproduces the logits
    adapter = tmp_path / "run" / ADAPTER_DIR
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.0."
    for x in ("k", "v"):
        assert torch.equal(tensors[f"{prefix}self_attn.{x}_proj.lora_A.weight"],
                           tensors[f"{prefix}self_attn.q_proj.lora_A.weight"])  # fmt: skip
    assert {k.split(".")[-3] for k in tensors} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                   "up_proj", "down_proj"}  # fmt: skip
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 11, 7]])
    trained = _trained(cfg, result.final_checkpoint)
    with torch.no_grad():
        want = trained(ids).logits
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(adapter)).eval()
        got = peft_model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()(input_ids=ids).logits
        assert (want - plain).abs().max() > 1e-3  # the brick does change the model
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(merged(ids).logits, want, atol=1e-5, rtol=1e-5)
    record = json.loads((adapter / "lmbricks.json").read_text())
    assert record["bricks"]["adapter"]["steps"] == 6

    # the held-out response loss falls with the brick alone
    evals = [json.loads(x) for x in (tmp_path / "run" / "sft_eval.jsonl").read_text().splitlines()]
    assert evals[-1]["held_out_response_loss"] < evals[0]["held_out_response_loss"]


def test_lora_resume_is_exact(tiny_llama: Path, tmp_path: Path) -> None:
    straight = _config(tmp_path, tiny_llama, steps=6, targets=["qkv", "down"])
    full = train(straight, tmp_path / "a", report=False)
    half = train(_config(tmp_path, tiny_llama, steps=3, targets=["qkv", "down"]), tmp_path / "b", report=False)
    assert half.final_checkpoint is not None and full.final_checkpoint is not None
    (tmp_path / "b" / "config.yaml").unlink()
    resumed = train(straight, tmp_path / "b", resume=True, report=False)
    assert resumed.final_checkpoint is not None
    a = torch.load(full.final_checkpoint / "trainer_state" / "lora.pt", weights_only=True)
    b = torch.load(resumed.final_checkpoint / "trainer_state" / "lora.pt", weights_only=True)
    assert a.keys() == b.keys() and len(a) == 2 * 2 * 2  # 2 layers x 2 targets x (A, B)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_lora_config_errors(tiny_llama: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lora.rank"):
        _config(tmp_path, tiny_llama, rank=0)
    with pytest.raises(ConfigError, match="lora.targets"):
        _config(tmp_path, tiny_llama, targets=["q_proj"])
    with pytest.raises(ConfigError, match="init_from"):
        parse_config({"model": {"hidden_size": 32}, "tokenizer": "lmbricks-tiny", "data": {"domains": ["code"]},
                      "lora": {}, "steps": 1, "batch_size": 1})  # fmt: skip


def test_lora_on_moe_adapts_attention_and_not_experts() -> None:
    """MoE experts are stacked tensors, not Linear modules: a brick on an MoE model adapts attention."""
    from lmbricks.nn import LM, LMConfig
    from lmbricks.train.lora import LoraSection, hf_lora_pairs, merged_model

    torch.manual_seed(0)
    moe = dict(num_experts=4, top_k=2, intermediate_size=32)
    cfg = LMConfig.from_dict(dict(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                  intermediate_size=64, moe=moe))  # fmt: skip
    lm = LM(cfg).eval()
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    before = lm(ids).logits
    counts = attach_lora(lm, LoraSection())
    assert counts["lora_modules"] == 4  # qkv and o in 2 layers
    assert {k.rsplit(".", 1)[-1] for k in hf_lora_pairs(lm)} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert all(".ffn." not in n for n, p in lm.named_parameters() if p.requires_grad)
    torch.testing.assert_close(lm(ids).logits, before)  # B starts at zero: the brick starts as a no-op
    with torch.no_grad():
        for n, p in lm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    merged = merged_model(lm)
    torch.testing.assert_close(merged(ids).logits, lm(ids).logits, atol=1e-5, rtol=1e-5)
    assert not any(".lora_" in n for n, _ in merged.named_parameters())


def test_a_trained_lora_brick_is_an_adapters_brick(tiny_llama: Path, tmp_path: Path) -> None:
    """save_lora_brick writes through adapters.brick.save_brick: read_brick and load_factors read it back."""
    from lmbricks.adapters.brick import load_factors, read_brick
    from lmbricks.nn.load import load_model
    from lmbricks.train.lora import hf_lora_pairs, save_lora_brick

    cfg = _config(tmp_path, tiny_llama)
    lm, _ = load_model(tiny_llama, dtype=torch.float32, hf_fallback=False)
    attach_lora(lm, cfg.lora, 0)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora" in name:
                p.add_(torch.randn_like(p) * 0.1)
    out = save_lora_brick(lm, tmp_path / "brick" / ADAPTER_DIR, cfg.lora, str(tiny_llama), extra={"steps": 3})
    info = read_brick(out)
    assert (info.name, info.rank) == ("brick", 4)
    assert json.loads((out / "lmbricks.json").read_text())["bricks"]["adapter"]["steps"] == 3
    assert set(info.targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    want, got = hf_lora_pairs(lm), load_factors(out)
    assert set(got) == set(want)
    for module, pair in want.items():  # the same update delta W = scale * B @ A of every module
        g = got[module]
        torch.testing.assert_close(g.scale * g.B.float() @ g.A.float(), pair.scale * pair.B.float() @ pair.A.float())
