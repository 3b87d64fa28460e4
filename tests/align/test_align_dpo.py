"""DPO: the loss, log 2 at the start, 0 steps = the reference, exact resume, LoRA, refusals, log-probabilities."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lmbricks.align.config import DPOJob
from lmbricks.align.dpo import check_pairs, dpo_loss
from lmbricks.align.logprob import token_logprobs
from lmbricks.align.pipeline import run_dpo
from lmbricks.config import validate
from lmbricks.errors import ConfigError
from lmbricks.nn.load import load_model
from lmbricks.reward import Pair, write_pairs

PAIRS = [
    Pair("Hello there", "hi, how are you?", "Bananas are yellow."),
    Pair("The quick brown fox", "jumps over the lazy dog.", "def main(): return 1"),
    Pair("2 + 2 =", "4", "5"),
    Pair("Emma Woodhouse,", "handsome, clever, and rich", "x^2 - 1 = 0"),
]


def _job(policy: Path, data: Path, **kw: object) -> DPOJob:
    base = {"policy": str(policy), "data": str(data), "steps": 4, "batch_size": 2, "beta": 0.5,
            "optim": {"lr": 1e-2}, "precision": "fp32", "checkpoint_every": 2, "keep_checkpoints": 5}  # fmt: skip
    return DPOJob.model_validate({**base, **kw})


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    return write_pairs(PAIRS, tmp_path / "pairs.jsonl")


def test_dpo_loss_formula() -> None:
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6, generator=g) * 5 for _ in range(4))
    loss, margin = dpo_loss(pc, pr, rc, rr, 0.3)
    expected = -torch.log(torch.sigmoid(0.3 * ((pc - rc) - (pr - rr)))).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(margin, 0.3 * ((pc - rc) - (pr - rr)))
    same, _ = dpo_loss(pc, pr, pc, pr, 0.3)
    assert float(same) == pytest.approx(math.log(2))


def test_token_logprobs_equal_each_sequence_alone(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    prompts, responses = [[5, 6, 7], [9]], [[10, 11], [12, 13, 14, 15]]
    logp, mask = token_logprobs(model, prompts, responses)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids = torch.tensor([p + r])
        full = torch.log_softmax(model(ids).logits[0].float(), -1)  # (T, V)
        want = torch.stack([full[len(p) - 1 + j, t] for j, t in enumerate(r)])
        torch.testing.assert_close(logp[i, : len(r)], want, rtol=1e-5, atol=1e-5)
    assert float(logp[0, 2:].detach().abs().sum()) == 0.0


def test_first_step_loss_is_log_2_and_training_moves_the_margin(
    tiny_llama: Path, pairs_file: Path, tmp_path: Path
) -> None:
    res = run_dpo(_job(tiny_llama, pairs_file, steps=12, checkpoint_every=12), tmp_path / "run")
    assert res.records[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert res.records[0]["margin"] == pytest.approx(0.0, abs=1e-5)
    assert sum(r["loss"] for r in res.records[-4:]) / 4 < math.log(2) - 0.05
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 12
    prov = json.loads((res.policy / "lmbricks.json").read_text())
    assert prov["command"] == "lmbricks align dpo" and prov["recipe"]["beta"] == 0.5


def test_zero_steps_saves_the_reference(tiny_llama: Path, pairs_file: Path, tmp_path: Path) -> None:
    res = run_dpo(_job(tiny_llama, pairs_file, steps=0), tmp_path / "run")
    got, _ = load_model(res.policy, hf_fallback=False)
    ref, _ = load_model(tiny_llama, hf_fallback=False)
    for (k, a), (_, b) in zip(got.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert res.records == []


@pytest.mark.parametrize("lora", [None, {"rank": 2, "alpha": 4}])
def test_resume_is_exact(tiny_llama: Path, pairs_file: Path, tmp_path: Path, lora: dict | None) -> None:
    whole = run_dpo(_job(tiny_llama, pairs_file, lora=lora), tmp_path / "whole")
    run_dpo(_job(tiny_llama, pairs_file, lora=lora, steps=2), tmp_path / "cut")
    resumed = run_dpo(_job(tiny_llama, pairs_file, lora=lora), tmp_path / "cut", resume=True)
    assert [r["loss"] for r in resumed.records] == [r["loss"] for r in whole.records[2:]]
    a, _ = load_model(whole.policy, hf_fallback=False)
    b, _ = load_model(resumed.policy, hf_fallback=False)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k
    assert (resumed.adapter is not None) == (lora is not None)
    if lora is not None:
        assert (tmp_path / "cut" / "adapter" / "adapter_config.json").exists()


def test_refusals_before_work(tiny_llama: Path, pairs_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pair 1: chosen and rejected are identical"):
        check_pairs([PAIRS[0], Pair("p", "same", "same")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "a"}\n')
    with pytest.raises(ConfigError, match="identical"):
        run_dpo(_job(tiny_llama, bad), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    run_dpo(_job(tiny_llama, pairs_file, steps=0), tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a run"):
        run_dpo(_job(tiny_llama, pairs_file, steps=0), tmp_path / "run")
    with pytest.raises(ConfigError):
        run_dpo(_job(tiny_llama, pairs_file), tiny_llama)  # the run directory is an input
    with pytest.raises(ConfigError, match="steps"):
        validate(DPOJob, {"policy": "p", "data": "d", "steps": -1}, "dpo.yaml")


@pytest.mark.parametrize("lora", [None, {"rank": 2, "alpha": 4}])
def test_recompute_gives_bit_identical_gradients_and_runs(
    tiny_llama: Path, pairs_file: Path, tmp_path: Path, lora: dict | None
) -> None:
    """``recompute`` (the default) against keeping the activations: every DPO gradient bit the same, and
    so the same losses and the same trained policy bit for bit."""
    from lmbricks.align.dpo import encode_preferences, pair_logprobs
    from lmbricks.train.lora import LoraSection, attach_lora

    grads, kept = [], [0, 0]
    for i, recompute in enumerate((True, False)):
        model, tok = load_model(tiny_llama, hf_fallback=False)
        if lora is not None:
            attach_lora(model, LoraSection.model_validate(lora), 0)
        enc = encode_preferences(tok, PAIRS, chat=False, max_len=512)

        def keep(x: torch.Tensor, i: int = i) -> torch.Tensor:
            kept[i] += x.numel()
            return x

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda x: x):
            pc, pr = pair_logprobs(model, enc, [0, 1, 2, 3], recompute)
        dpo_loss(pc, pr, pc.detach() + 0.2, pr.detach() - 0.1, 0.5)[0].backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for k in grads[0]:
        assert torch.equal(grads[0][k], grads[1][k]), k
    assert any(float(g.abs().max()) > 0 for g in grads[0].values())  # not vacuous
    assert kept[0] < kept[1] / 2, kept  # recompute did take effect: the blocks' activations were not kept
    runs = [run_dpo(_job(tiny_llama, pairs_file, lora=lora, recompute=r), tmp_path / f"r{r}") for r in (True, False)]
    assert [r["loss"] for r in runs[0].records] == [r["loss"] for r in runs[1].records]
    a, _ = load_model(runs[0].policy, hf_fallback=False)
    b, _ = load_model(runs[1].policy, hf_fallback=False)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k
