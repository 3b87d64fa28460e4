"""Routing on a tiny model with planted domain signal is near-perfect; bad input is refused."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmbricks.adapters import load_factors
from lmbricks.adapters.hub_adapter import AdapterSlot
from lmbricks.adapters.route import Router, fit_router, mean_hidden, text_ids
from lmbricks.adapters.routing_eval import evaluate_routing
from lmbricks.errors import ConfigError

# Each domain draws words from its own alphabet: the token (hence embedding) distributions differ.
ALPHABETS = {"d0": "abcdefgh", "d1": "0123456789+-=", "d2": "你好世界天地人"}


def _docs(domain: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    chars = ALPHABETS[domain]
    return [" ".join("".join(rng.choice(chars) for _ in range(rng.randint(2, 6))) for _ in range(30)) for _ in range(n)]


def test_planted_domains_route_perfectly(tiny_llama: Path, tiny_bricks: list[Path]) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    router = fit_router(model, tok, {d: _docs(d, 6, seed=1) for d in ALPHABETS}, max_tokens=512)
    held_out = {d: _docs(d, 10, seed=2) for d in ALPHABETS}
    bricks = {f"d{i}": load_factors(p) for i, p in enumerate(tiny_bricks)}
    slot = AdapterSlot(model, rank=4, modules=sorted(bricks["d0"]))
    res = evaluate_routing(slot, tok, router, bricks, {n: n for n in bricks}, held_out, per_domain=10, doc_tokens=64)
    assert res["all"]["accuracy"] >= 0.95
    # With perfect routing the routed perplexity is the oracle's.
    assert res["all"]["ppl_routed"] == pytest.approx(res["all"]["ppl_oracle"], rel=1e-3)


def test_top_k_weights_and_round_trip(tmp_path: Path) -> None:
    router = Router(["a", "b", "c"], torch.eye(3) * 5.0)
    choice = router.route(torch.tensor([4.0, 1.0, 0.0]), top_k=2)[0]
    assert [n for n, _ in choice] == ["a", "b"] and sum(w for _, w in choice) == pytest.approx(1.0)
    assert choice[0][1] > choice[1][1]
    router.save(tmp_path / "r.json")
    again = Router.load(tmp_path / "r.json")
    torch.testing.assert_close(again.centroids, router.centroids)
    with pytest.raises(ConfigError, match="top_k"):
        router.route(torch.zeros(3), top_k=4)


def test_empty_input_is_refused(tiny_llama: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    with pytest.raises(ConfigError, match="empty"):
        mean_hidden(model, text_ids(tok, "", 10))
