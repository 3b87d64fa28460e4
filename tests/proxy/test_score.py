"""Scoring text under a proxy ensemble: the identities of decoding hold for perplexity too."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmbricks.errors import ConfigError
from lmbricks.eval.perplexity import evaluate_text
from lmbricks.proxy import Member
from lmbricks.proxy.score import ProxyScores, proxy_nll, proxy_perplexity, text_logits
from lmbricks.testing import save_tiny_model, tiny_llama_config

TEXT = "The quick brown fox jumps over the lazy dog. def main(): return 0\n" * 6


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Member]:
    root = tmp_path_factory.mktemp("proxy_score")
    out = {}
    for name, seed in (("base", 0), ("expert", 1), ("anti", 2)):
        path = save_tiny_model(root / name, tiny_llama_config(), seed=seed)
        out[name] = Member(AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))
    return out


def test_members_alone_match_the_perplexity_evaluator(trio: dict[str, Member]) -> None:
    s = proxy_perplexity(trio["base"], trio["expert"], trio["anti"], TEXT, alphas=(0.0, 1.0), seq_len=32)
    for role in ("base", "expert", "anti"):
        m = trio[role]
        ref = evaluate_text(m.model, m.tokenizer, TEXT, seq_len=32).ppl
        assert getattr(s, role) == pytest.approx(ref, rel=1e-5)
    assert s.proxy[0.0] == pytest.approx(s.base, rel=1e-6)  # alpha 0 is the base


def test_identities(trio: dict[str, Member]) -> None:
    b, e = trio["base"], trio["expert"]
    same = proxy_perplexity(b, e, e, TEXT, alphas=(1.7,), seq_len=32)
    assert same.proxy[1.7] == pytest.approx(same.base, rel=1e-6)  # expert == anti: the base
    steer = proxy_perplexity(b, e, b, TEXT, alphas=(1.0, 2.0), seq_len=32)
    assert steer.proxy[1.0] == pytest.approx(steer.expert, rel=1e-5)  # base == anti, alpha 1: the expert
    assert steer.proxy[2.0] != pytest.approx(steer.proxy[1.0], rel=1e-3)  # alpha matters


def test_gap_closed() -> None:
    s = ProxyScores(tokens=10, base=10.0, expert=8.0, anti=9.0, proxy={1.0: 9.0, 2.0: 7.0})
    assert s.gap_closed(1.0) == pytest.approx(0.5) and s.gap_closed(2.0) == pytest.approx(1.5)
    assert math.isnan(ProxyScores(tokens=10, base=8.0, expert=9.0, anti=9.0, proxy={1.0: 8.5}).gap_closed())


def test_windows_cover_every_token_and_nll_formula(trio: dict[str, Member]) -> None:
    m = trio["base"]
    ids = torch.tensor(m.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    logits = text_logits(m.model, ids, 0, seq_len=16)
    assert logits.shape == (ids.numel(), m.model.config.vocab_size)
    b, e, a = torch.randn(4, 7), torch.randn(4, 7), torch.randn(4, 7)
    t = torch.tensor([0, 3, 6, 2])
    want = -torch.log_softmax(b + 0.5 * (e - a), -1)[torch.arange(4), t]
    torch.testing.assert_close(proxy_nll(b, e, a, t, 0.5), want)
    with pytest.raises(ConfigError, match="finite"):
        proxy_perplexity(m, m, m, TEXT, alphas=(float("nan"),))


def test_max_tokens_scores_the_first_tokens_only(trio: dict[str, Member]) -> None:
    b, e, a = trio["base"], trio["expert"], trio["anti"]
    s = proxy_perplexity(b, e, a, TEXT, alphas=(1.0,), seq_len=16, max_tokens=20)
    assert s.tokens == 20
    ids = torch.tensor(b.tokenizer(TEXT, add_special_tokens=False)["input_ids"])[:20]
    start = b.tokenizer.bos_token_id
    z = {k: text_logits(trio[k].model, ids, start, seq_len=16) for k in ("base", "expert", "anti")}  # (20, V)
    nll = proxy_nll(z["base"], z["expert"], z["anti"], ids, 1.0)  # (20,)
    assert s.proxy[1.0] == pytest.approx(math.exp(float(nll.double().mean())), rel=1e-6)
    base_nll = -torch.log_softmax(z["base"], -1).gather(-1, ids[:, None])
    assert s.base == pytest.approx(math.exp(float(base_nll.double().mean())), rel=1e-6)
