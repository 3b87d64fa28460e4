"""Proxy-tuning identities on tiny models that share one tokenizer."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmbricks.errors import ConfigError
from lmbricks.proxy import DecodeConfig, Member, ProxyDecoder, combine_logits, proxy_generate
from lmbricks.proxy.decode import repetition_penalty
from lmbricks.testing import save_tiny_model, tiny_llama_config

PROMPTS = ["The quick brown fox", "def main(): return", "Hello"]


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Member]:
    root = tmp_path_factory.mktemp("proxy")
    out = {}
    for name, seed in (("base", 0), ("expert", 1), ("anti", 2)):
        path = save_tiny_model(root / name, tiny_llama_config(), seed=seed)
        out[name] = Member(AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))
    return out


def _tokens(base: Member, expert: Member | None = None, anti: Member | None = None, **kw: object) -> list[list[int]]:
    cfg = DecodeConfig(max_new_tokens=12, stop_at_eos=False, **kw)  # type: ignore[arg-type]
    return proxy_generate(base, PROMPTS, cfg, expert=expert, anti=anti).tokens


def test_expert_equal_to_anti_gives_the_base(trio: dict[str, Member]) -> None:
    assert _tokens(trio["base"], trio["expert"], trio["expert"], alpha=1.7) == _tokens(trio["base"])


def test_alpha_zero_gives_the_base(trio: dict[str, Member]) -> None:
    assert _tokens(trio["base"], trio["expert"], trio["anti"], alpha=0.0) == _tokens(trio["base"])


def test_base_equal_to_anti_gives_the_expert(trio: dict[str, Member]) -> None:
    steered = _tokens(trio["base"], trio["expert"], trio["base"], alpha=1.0)
    assert steered == _tokens(trio["expert"])
    assert steered != _tokens(trio["base"])  # not vacuous: the models disagree


def test_kv_cache_equals_recompute(trio: dict[str, Member]) -> None:
    decoders = [
        ProxyDecoder(trio["base"], trio["expert"], trio["anti"], DecodeConfig(use_cache=c, stop_at_eos=False))
        for c in (True, False)
    ]
    for d in decoders:
        d.start(PROMPTS)
    for _ in range(10):
        a, b = decoders[0].last_logits, decoders[1].last_logits
        assert a is not None and b is not None
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        ta, tb = decoders[0].step(), decoders[1].step()
        assert torch.equal(ta, tb)


def test_batched_left_padding_equals_one_by_one(trio: dict[str, Member]) -> None:
    cfg = DecodeConfig(max_new_tokens=8, stop_at_eos=False)
    batched = proxy_generate(trio["base"], PROMPTS, cfg, trio["expert"], trio["anti"]).tokens
    single = [proxy_generate(trio["base"], [p], cfg, trio["expert"], trio["anti"]).tokens[0] for p in PROMPTS]
    assert batched == single


def test_combine_logits_formula() -> None:
    b, e, a = torch.randn(2, 5), torch.randn(2, 5), torch.randn(2, 5)
    torch.testing.assert_close(combine_logits(b, e, a, 0.5), b + 0.5 * (e - a))


def test_sampling_is_seeded(trio: dict[str, Member]) -> None:
    one = _tokens(trio["base"], trio["expert"], trio["anti"], temperature=1.0, top_k=20, top_p=0.9, seed=3)
    two = _tokens(trio["base"], trio["expert"], trio["anti"], temperature=1.0, top_k=20, top_p=0.9, seed=3)
    assert one == two


def test_bad_input(trio: dict[str, Member]) -> None:
    with pytest.raises(ConfigError, match="alpha must be a finite"):
        DecodeConfig(alpha=float("nan"))
    with pytest.raises(ConfigError, match="alpha must be a finite"):
        DecodeConfig(alpha=float("inf"))
    with pytest.raises(ConfigError, match="prompt 1 is empty"):
        proxy_generate(trio["base"], ["hi", "  "], DecodeConfig(max_new_tokens=2))
    with pytest.raises(ConfigError, match="both an expert and an anti-expert"):
        ProxyDecoder(trio["base"], trio["expert"], None, DecodeConfig())


@pytest.mark.parametrize("alpha", [1.0, 1.5])
def test_proxy_logits_equal_base_plus_expert_minus_anti(trio: dict[str, Member], alpha: float) -> None:
    """The decoder's logits at each step against the three models' own forward passes on the same
    tokens: z = z_base + alpha (z_expert - z_anti), so a decoder that drops the anti-expert fails."""
    tok = trio["base"].tokenizer
    ids = tok(PROMPTS[0], return_tensors="pt").input_ids  # (1, T)
    d = ProxyDecoder(trio["base"], trio["expert"], trio["anti"], DecodeConfig(alpha=alpha, stop_at_eos=False))
    d.start([PROMPTS[0]])
    for _ in range(3):
        with torch.no_grad():
            z = {k: trio[k].model(ids).logits[0, -1].float() for k in ("base", "expert", "anti")}  # (V,)
        want = z["base"] + alpha * (z["expert"] - z["anti"])
        got = d.last_logits
        assert got is not None
        torch.testing.assert_close(got[0].float(), want, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(want, z["base"] + alpha * z["expert"], atol=1e-2)  # the anti-expert matters
        chosen = int(d.generated[0, -1])  # greedy: the argmax of the combined logits
        assert chosen == int(want.argmax())
        ids = torch.cat([ids, torch.tensor([[chosen]], dtype=ids.dtype)], dim=1)
        d.step()


def _greedy_rows(trio: dict[str, Member], cfg: DecodeConfig, base: Member | None = None) -> ProxyDecoder:
    """A decoder over PROMPTS, run to its end (the caller reads ``generated`` and ``output()``)."""
    d = ProxyDecoder(base or trio["base"], trio["expert"], trio["anti"], cfg)
    d.start(PROMPTS)
    for _ in range(cfg.max_new_tokens - 1):
        if d.finished:
            break
        d.step()
    return d


def test_generates_exactly_max_new_tokens(trio: dict[str, Member]) -> None:
    out = proxy_generate(
        trio["base"], PROMPTS, DecodeConfig(max_new_tokens=7, stop_at_eos=False), trio["expert"], trio["anti"]
    )
    assert [len(row) for row in out.tokens] == [7] * len(PROMPTS)


def test_eos_ends_a_sequence_and_later_steps_write_padding(trio: dict[str, Member]) -> None:
    """Make the third token greedy decoding picks for prompt 0 the EOS token: that row is cut after
    it (EOS kept), the decoder writes padding after it, and the other rows are cut at their own first
    occurrence of it (or run to the end)."""
    free = _greedy_rows(trio, DecodeConfig(max_new_tokens=10, stop_at_eos=False)).generated.tolist()
    eos = free[0][2]
    tok = copy.deepcopy(trio["base"].tokenizer)
    tok.add_special_tokens({"eos_token": tok.convert_ids_to_tokens(eos)})  # an existing token: no new id
    assert tok.eos_token_id == eos
    base = Member(trio["base"].model, tok)
    d = _greedy_rows(trio, DecodeConfig(max_new_tokens=10, stop_at_eos=True), base=base)
    want = [row[: row.index(eos) + 1] if eos in row else row for row in free]
    assert d.output().tokens == want
    assert d.output().tokens[0] == free[0][:3]  # EOS included, nothing after it
    pad = tok.pad_token_id
    for i, row in enumerate(d.generated.tolist()):
        end = len(want[i])
        assert row[:end] == want[i] and all(t == pad for t in row[end:]), i


def test_sampling_settings_that_leave_one_token_equal_greedy(trio: dict[str, Member]) -> None:
    """top_k = 1, a tiny top_p, or a temperature near 0 leave only the argmax: sampling is greedy then,
    where sampling at temperature 1 from the full distribution is not."""
    greedy = _tokens(trio["base"], trio["expert"], trio["anti"])
    for kw in ({"top_k": 1}, {"top_p": 1e-6}, {"temperature": 1e-4}):
        settings = {"temperature": 1.0, "seed": 5, **kw}
        assert _tokens(trio["base"], trio["expert"], trio["anti"], **settings) == greedy, kw
    assert _tokens(trio["base"], trio["expert"], trio["anti"], temperature=1.0, seed=5) != greedy


def test_repetition_penalty_against_a_hand_written_one(trio: dict[str, Member]) -> None:
    """CTRL's penalty on every real token already in the base's sequence (prompt included, left padding
    not): a positive
    logit divided by the penalty, a negative one multiplied; greedy takes the argmax of the result.
    A penalty below 1 favours the seen tokens, which changes choices of these near-uniform tiny models."""
    penalty = 0.25
    d = ProxyDecoder(
        trio["base"], trio["expert"], trio["anti"], DecodeConfig(repetition_penalty=penalty, stop_at_eos=False)
    )
    d.start(PROMPTS)
    changed = 0
    for _ in range(10):
        ids = d.streams["base"].ids[:, :-1]  # (B, L): the sequence the last choice was made on
        real = d.streams["base"].mask[:, :-1].bool()  # (B, L): the left padding is not "seen"
        z = d.last_logits
        assert z is not None
        seen = torch.zeros_like(z, dtype=torch.bool)
        for i in range(len(PROMPTS)):
            seen[i, ids[i][real[i]]] = True  # (B, V)
        want = torch.where(seen, torch.where(z > 0, z / penalty, z * penalty), z).argmax(-1)
        assert torch.equal(d.generated[:, -1], want)
        changed += int((want != z.argmax(-1)).sum())
        d.step()
    assert changed > 0  # not vacuous: the penalty changed some choices


def test_repetition_penalty_batched_equals_alone(trio: dict[str, Member]) -> None:
    """Greedy with the penalty on: a short prompt decoded next to a longer one (so left padded) gives the
    tokens it gives alone. A penalty below 1 boosts every seen token, so a decoder that counts the padding
    as seen would boost the pad id in the padded row only (and pick it)."""
    short, long = "Hello", "The quick brown fox jumps over the lazy dog again and again"
    for penalty in (0.05, 1.3):
        cfg = DecodeConfig(max_new_tokens=10, stop_at_eos=False, repetition_penalty=penalty)
        batched = proxy_generate(trio["base"], [short, long], cfg, trio["expert"], trio["anti"]).tokens
        alone = [proxy_generate(trio["base"], [p], cfg, trio["expert"], trio["anti"]).tokens[0] for p in (short, long)]
        assert batched == alone, penalty


def test_repetition_penalty_ignores_the_pad_id_unless_it_is_real() -> None:
    """The pad id's logit is untouched where it only pads, and penalised like any token where it is
    also a real token of the row; a real token is penalised once however often it occurs."""
    pad, penalty = 0, 2.0
    scores = torch.tensor([[4.0, 2.0, -2.0, 1.0], [4.0, 2.0, -2.0, 1.0]])  # (B=2, V=4)
    ids = torch.tensor([[pad, pad, 2, 2], [pad, 0, 1, 2]])  # (B, L): row 1 has the pad id as a real token
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    got = repetition_penalty(scores, ids, mask, penalty)
    want = torch.tensor([[4.0, 2.0, -4.0, 1.0], [2.0, 1.0, -4.0, 1.0]])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
