"""Online RL: RLOO / GRPO advantages, zero gradient for a constant reward, 0 steps = the reference, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmbricks.align.config import RLJob
from lmbricks.align.logprob import token_logprobs
from lmbricks.align.pipeline import run_rl
from lmbricks.align.rl import advantages, policy_gradient_loss
from lmbricks.align.sample import SamplingConfig, encode_policy_prompts, sample_responses
from lmbricks.errors import ConfigError
from lmbricks.nn.load import load_model


def test_rloo_is_the_leave_one_out_baseline_and_grpo_normalises() -> None:
    r = torch.tensor([[1.0, 2.0, 4.0, 9.0], [0.0, 0.0, 1.0, 3.0]])
    want = torch.stack([r[:, i] - torch.cat([r[:, :i], r[:, i + 1 :]], 1).mean(1) for i in range(4)], 1)
    torch.testing.assert_close(advantages(r, "rloo"), want)
    g = advantages(r, "grpo")
    torch.testing.assert_close(g.mean(1), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(g.std(1, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_constant_reward_at_kl_0_gives_exactly_zero_gradient(tiny_llama: Path, algorithm: str) -> None:
    const = torch.full((3, 4), 0.7)
    adv = advantages(const, algorithm)  # type: ignore[arg-type]
    assert torch.equal(adv, torch.zeros_like(adv))
    model, tok = load_model(tiny_llama, hf_fallback=False)
    ids = encode_policy_prompts(tok, ["Hello", "The quick brown fox", "2 + 2"], chat=False)
    s = sample_responses(model, tok, ids, 4, SamplingConfig(max_new_tokens=6), seed=0)
    rows = [p for p in s.prompt_ids for _ in range(4)]
    resp = [r for rs in s.responses for r in rs]
    logp, mask = token_logprobs(model, rows, resp)
    loss, _ = policy_gradient_loss(logp, logp.detach(), mask, adv.flatten(), kl_coef=0.0)
    loss.backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.parameters())
    # the same samples with a non-constant reward do move the policy (the test can fail)
    model.zero_grad()
    logp, mask = token_logprobs(model, rows, resp)
    adv = advantages(torch.arange(12.0).view(3, 4), algorithm).flatten()  # type: ignore[arg-type]
    policy_gradient_loss(logp, logp.detach(), mask, adv, kl_coef=0.0)[0].backward()
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.parameters())


def test_kl_term_is_zero_at_the_reference_and_positive_away() -> None:
    logp = torch.tensor([[-1.0, -2.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    _, kl = policy_gradient_loss(logp, logp, mask, torch.zeros(1), kl_coef=1.0)
    assert float(kl) == 0.0
    _, kl = policy_gradient_loss(logp, logp - 0.5, mask, torch.zeros(1), kl_coef=1.0)
    assert float(kl) == pytest.approx(float(torch.exp(torch.tensor(-0.5)) + 0.5 - 1))


def _job(policy: Path, rms: list[Path], prompts: Path, **kw: object) -> RLJob:
    base = {"policy": str(policy), "reward_models": [str(p) for p in rms], "prompts": str(prompts), "steps": 2,
            "prompts_per_step": 2, "samples_per_prompt": 3, "sampling": {"max_new_tokens": 5},
            "optim": {"lr": 1e-2}, "precision": "fp32", "checkpoint_every": 1, "keep_checkpoints": 5}  # fmt: skip
    return RLJob.model_validate({**base, **kw})


def _prompts(tmp_path: Path) -> Path:
    f = tmp_path / "prompts.txt"
    f.write_text("Hello\nThe quick brown fox\n2 + 2 =\nEmma Woodhouse,\n")
    return f


def test_zero_steps_saves_the_reference(tiny_llama: Path, tiny_rms: list[Path], tmp_path: Path) -> None:
    res = run_rl(_job(tiny_llama, tiny_rms[:1], _prompts(tmp_path), steps=0), tmp_path / "run")
    got, _ = load_model(res.policy, hf_fallback=False)
    ref, _ = load_model(tiny_llama, hf_fallback=False)
    for (k, a), (_, b) in zip(got.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_rl_steps_and_exact_resume(tiny_llama: Path, tiny_rms: list[Path], tmp_path: Path) -> None:
    prompts = _prompts(tmp_path)
    whole = run_rl(_job(tiny_llama, tiny_rms, prompts), tmp_path / "whole")
    assert whole.records[0]["kl"] == 0.0  # the first samples are scored against an identical reference
    assert whole.records[1]["kl"] > 0 and whole.records[0]["sampled_tokens"] > 0
    run_rl(_job(tiny_llama, tiny_rms, prompts, steps=1), tmp_path / "cut")
    resumed = run_rl(_job(tiny_llama, tiny_rms, prompts), tmp_path / "cut", resume=True)
    assert resumed.records[0]["loss"] == whole.records[1]["loss"]
    a, _ = load_model(whole.policy, hf_fallback=False)
    b, _ = load_model(resumed.policy, hf_fallback=False)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k


def test_recompute_leaves_the_run_unchanged(tiny_llama: Path, tiny_rms: list[Path], tmp_path: Path) -> None:
    """Recomputing activations in the update (the default) against keeping them: the same samples (same
    rewards, KL and token counts at every step) and the same trained policy, bit for bit."""
    prompts = _prompts(tmp_path)
    runs = [
        run_rl(_job(tiny_llama, tiny_rms, prompts, steps=3, recompute=r), tmp_path / f"r{r}") for r in (True, False)
    ]
    figures = [[{k: v for k, v in r.items() if not k.endswith("_cpu_s")} for r in run.records] for run in runs]
    assert figures[0] == figures[1] and len(figures[0]) == 3 and figures[0][2]["kl"] > 0
    a, _ = load_model(runs[0].policy, hf_fallback=False)
    b, _ = load_model(runs[1].policy, hf_fallback=False)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k


def test_rl_refuses_bad_inputs_before_work(tiny_llama: Path, tiny_rms: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        run_rl(_job(tiny_llama, [tmp_path / "nope"], _prompts(tmp_path)), tmp_path / "run")
    with pytest.raises(ConfigError, match="no such file"):
        run_rl(_job(tiny_llama, tiny_rms, tmp_path / "missing.txt"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_rl_trains_against_a_python_scorer_in_place_of_reward_dirs(tiny_llama: Path, tmp_path: Path) -> None:
    from lmbricks.align.scorer import text_scorer

    scorer = text_scorer(lambda _p, r: float(len(r)))  # a reward of the text alone, no reward-model directory
    res = run_rl(_job(tiny_llama, [], _prompts(tmp_path), steps=2), tmp_path / "run", scorer=scorer)
    assert len(res.records) == 2 and res.records[1]["kl"] > 0
    prov = json.loads((res.policy / "lmbricks.json").read_text())
    assert "python" in json.dumps(prov) and "reward_model_0" not in json.dumps(prov)
    with pytest.raises(ConfigError, match="no reward model"):
        run_rl(_job(tiny_llama, [], _prompts(tmp_path)), tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_bf16_reference_leaves_the_loss_unchanged_to_rounding(tiny_llama: Path) -> None:
    """The bf16 reference copy gives the loss and KL of the fp32 reference under bf16 autocast, to bf16 rounding."""
    import copy

    from lmbricks.align.pipeline import reference_copy
    from lmbricks.runtime import autocast

    model, tok = load_model(tiny_llama, hf_fallback=False)
    ref32 = copy.deepcopy(model).eval().requires_grad_(False)
    ref16 = reference_copy(model, "bf16")
    assert next(ref16.parameters()).dtype == torch.bfloat16 and not next(ref16.parameters()).requires_grad
    with torch.no_grad():  # the policy moved away from the reference, so the KL term is not 0
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ids = encode_policy_prompts(tok, ["Hello", "The quick brown fox"], chat=False)
    s = sample_responses(model, tok, ids, 2, SamplingConfig(max_new_tokens=6), seed=0)
    rows, resp = [p for p in s.prompt_ids for _ in range(2)], [r for rs in s.responses for r in rs]
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    out = {}
    for name, ref in (("fp32", ref32), ("bf16", ref16)):
        with autocast("bf16", "cpu"), torch.no_grad():
            r, _ = token_logprobs(ref, rows, resp)
            logp, mask = token_logprobs(model, rows, resp)
        out[name] = policy_gradient_loss(logp, r, mask, adv, kl_coef=1.0)
    assert float(out["fp32"][1]) > 0.01  # a KL term well above rounding
    torch.testing.assert_close(out["bf16"][0], out["fp32"][0], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(out["bf16"][1], out["fp32"][1], atol=5e-3, rtol=5e-2)
