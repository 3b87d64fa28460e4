"""Capture on tiny Mixtral checkpoints: a router biased per domain, a uniform random router, and parity
between the tracers of the Hugging Face and lmbricks implementations of the same checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from planted_routing import exclusive_tokens
from torch import nn

from lmbricks.trace import (
    AuxTracer,
    RouterHookTracer,
    RouterLogitsTracer,
    RoutingTrace,
    capture_routing,
    domain_histograms,
    find_tracer,
    random_baselines,
    summarise,
    tokenize_domains,
)
from lmbricks.trace.inputs import load_routed_model


class RandomTopKRouter(nn.Module):
    """A uniform random router: i.i.d. Gaussian logits per token, whatever the input (HF router interface)."""

    def __init__(self, num_experts: int, top_k: int, seed: int) -> None:
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = hidden_states.reshape(-1, hidden_states.shape[-1]).shape[0]
        logits = torch.randn(t, self.num_experts, generator=self.gen)  # (T, E)
        top, idx = torch.softmax(logits, -1).topk(self.top_k, dim=-1)  # (T, k)
        return logits, top / top.sum(-1, keepdim=True), idx


@pytest.fixture(scope="module")
def hf_model(biased_mixtral: Path) -> tuple[Any, Any]:
    model, tok, _ = load_routed_model(biased_mixtral)
    return model, tok


@pytest.fixture(scope="module")
def biased_trace(hf_model: tuple[Any, Any], domain_texts: dict[str, list[str]]) -> RoutingTrace:
    model, tok = hf_model
    docs, domains = tokenize_domains(tok, domain_texts)
    return capture_routing(model, docs, domains)


def test_histograms_sum_to_k_times_tokens(biased_trace: RoutingTrace) -> None:
    t = biased_trace
    assert t.source == "router-hooks" and t.layers == [0, 1] and t.num_experts == 4 and t.top_k == 2
    hists = domain_histograms(t)
    assert hists["all"].sum(-1).tolist() == [2 * t.num_tokens] * 2
    for i, d in enumerate(t.domains):
        assert hists[d].sum(-1).tolist() == [2 * int((t.token_domains() == i).sum())] * 2


def test_planted_bias_is_recovered(
    biased_trace: RoutingTrace, hf_model: tuple[Any, Any], domain_texts: dict[str, list[str]]
) -> None:
    t = biased_trace
    excl = exclusive_tokens(hf_model[1], domain_texts)
    top1 = t.top1()
    for d, ids in enumerate(excl.values()):
        mine = torch.isin(t.token_ids, torch.tensor(sorted(ids)))
        assert int(mine.sum()) > 0
        assert (top1[:, mine] == d).all(), f"domain {d}: exclusive tokens not routed to expert {d}"


def test_topic_svm_near_perfect_on_biased_router(biased_trace: RoutingTrace) -> None:
    s = summarise(biased_trace, folds=5)
    rows = {r["features"]: r["accuracy"] for r in s["topic"]}
    assert rows["majority class"] == pytest.approx(0.25)
    assert rows["all layers"] >= 0.95 and rows["layer 0"] >= 0.95 and rows["layer 1"] >= 0.95
    r1 = s["random_baselines"]["same_top1"]
    assert all(c["same_top1"] > r1 + 4 * c["same_top1_stderr"] for c in s["consecutive"])


def test_uniform_random_router_gives_baselines_and_chance_svm(
    biased_mixtral: Path, domain_texts: dict[str, list[str]]
) -> None:
    model, tok, _ = load_routed_model(biased_mixtral)
    for i, layer in enumerate(model.model.layers):
        layer.mlp.gate = RandomTopKRouter(4, 2, seed=100 + i)
    docs, domains = tokenize_domains(tok, domain_texts)
    trace = capture_routing(model, docs, domains)
    s = summarise(trace, folds=5)
    r1, rk = random_baselines(4, 2)
    for c in s["consecutive"]:
        assert abs(c["same_top1"] - r1) < 4 * math.sqrt(r1 * (1 - r1) / c["pairs"])
        assert abs(c["topk_overlap"] - rk) < 4 * math.sqrt(rk * (1 - rk) / c["pairs"])
    for ld in s["load"]:
        assert ld["normalised_entropy"] > 0.99
    rows = {r["features"]: r["accuracy"] for r in s["topic"]}
    assert rows["all layers"] < 0.5  # chance is 0.25 with four balanced domains
    assert rows["bag of words"] >= 0.95  # the texts themselves are easy to tell apart


def test_hf_and_lmbricks_tracers_agree(biased_mixtral: Path, hf_model: tuple[Any, Any]) -> None:
    from lmbricks.nn import load_model

    hf, tok = hf_model
    lm, _ = load_model(biased_mixtral)
    assert isinstance(find_tracer(lm), AuxTracer) and isinstance(find_tracer(hf), RouterHookTracer)
    texts = {"x": ["def main(): return 1 + 2 * x. The quick brown fox jumps over the lazy dog."]}
    docs, domains = tokenize_domains(tok, texts)
    ref = capture_routing(hf, docs, domains)
    for model, tracer in [
        (hf, RouterLogitsTracer(hf)),
        (lm, AuxTracer(lm)),
        (lm, RouterHookTracer(lm)),  # reads lmbricks RouterOutput objects
    ]:
        other = capture_routing(model, docs, domains, tracer=tracer)
        assert other.layers == ref.layers
        assert torch.equal(other.indices, ref.indices), tracer.name
        torch.testing.assert_close(other.weights, ref.weights, rtol=1e-5, atol=1e-5)


def test_batched_capture_equals_one_document_at_a_time(
    biased_trace: RoutingTrace, hf_model: tuple[Any, Any], domain_texts: dict[str, list[str]]
) -> None:
    model, tok = hf_model
    docs, domains = tokenize_domains(tok, domain_texts)
    docs, domains = docs[:12], domains[:12]  # lengths differ: right padding is exercised
    assert len({len(d) for d in docs}) > 1
    one = capture_routing(model, docs, domains, batch_size=1)
    batched = capture_routing(model, docs, domains, batch_size=5)  # the last batch is partial
    assert torch.equal(one.token_ids, batched.token_ids) and torch.equal(one.doc_ids, batched.doc_ids)
    n = one.num_tokens
    assert torch.equal(one.indices, biased_trace.indices[:, :n])
    assert (one.top1() == batched.top1()).float().mean() > 0.999
    torch.testing.assert_close(one.weights, batched.weights, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["qwen2_moe", "olmoe"])
def test_qwen2_moe_and_olmoe_routers_are_traced(family: str) -> None:
    from transformers import AutoModelForCausalLM, OlmoeConfig, Qwen2MoeConfig

    common: dict[str, Any] = dict(
        vocab_size=384, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        num_experts=4, num_experts_per_tok=2, max_position_embeddings=256, eos_token_id=2,
    )  # fmt: skip
    if family == "qwen2_moe":
        cfg: Any = Qwen2MoeConfig(moe_intermediate_size=32, shared_expert_intermediate_size=32, **common)
    else:
        cfg = OlmoeConfig(intermediate_size=64, **common)
    assert cfg.norm_topk_prob is False  # the gates are the raw top-k probabilities
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    docs = [list(range(5, 40)), list(range(50, 70))]
    hooks = capture_routing(model, docs, ["x", "y"], batch_size=2)
    logits = capture_routing(model, docs, ["x", "y"], tracer=RouterLogitsTracer(model))
    assert hooks.source == "router-hooks" and hooks.layers == [0, 1] and hooks.top_k == 2
    assert torch.equal(hooks.indices, logits.indices)
    torch.testing.assert_close(hooks.weights, logits.weights, rtol=1e-5, atol=1e-6)
    assert bool((hooks.weights.sum(-1) < 1).all())  # not renormalised
