"""Prompts nest their demonstrations; cached-prefix decoding equals batched transformers decoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbricks.eval.fewshot import Item, Task, build_prompt, cut_at_stops, generate_batched
from lmbricks.eval.fewshot.generate import common_prefix_length, generate_cached


def _task() -> Task:
    demos = [Item(f"d{i}", f"What is {i} + {i}?", (str(2 * i),), f"{i} plus {i} is {2 * i}.") for i in range(4)]
    items = [Item(f"q{i}", f"What is {i} + 1?", (str(i + 1),)) for i in range(5)]
    return Task(name="toy", instruction="Add.", kind="math", items=items, demos=demos)


def test_demonstrations_nest_and_modes_differ() -> None:
    t = _task()
    p1 = build_prompt(t, t.items[0], 1, cot=False)
    p2 = build_prompt(t, t.items[0], 2, cot=False)
    assert p1.count("Question:") == 2 and p2.count("Question:") == 3
    assert p2.startswith(p1.rsplit("\n\nQuestion: What is 0 + 1?", 1)[0])
    cot = build_prompt(t, t.items[0], 2, cot=True)
    assert "1 plus 1 is 2. The answer is 2." in cot
    assert build_prompt(t, t.items[0], 0, cot=True).endswith("Answer: Let's think step by step.")
    with pytest.raises(ValueError, match="4 demonstrations"):
        build_prompt(t, t.items[0], 5, cot=False)


def test_chat_format_uses_turns(tiny_llama: Path) -> None:
    from lmbricks.sft import parse_chatml
    from lmbricks.testing import build_tiny_tokenizer

    t = _task()
    text = build_prompt(t, t.items[1], 2, cot=False, fmt="chat", tokenizer=build_tiny_tokenizer())
    assert text.endswith("<|im_start|>assistant\n")
    msgs = parse_chatml(text[: -len("<|im_start|>assistant\n")])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == "0" and msgs[-1]["content"] == "What is 1 + 1?"


def test_helpers() -> None:
    assert cut_at_stops("42\nQuestion: x", ["\nQuestion:", "\n"]) == "42"
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([]) == 0


def test_cached_prefix_decoding_equals_batched_transformers(tiny_llama: Path) -> None:
    from lmbricks.hub import load_hf_model
    from lmbricks.nn import load_model

    lm, tok = load_model(tiny_llama)
    hf, hf_tok = load_hf_model(tiny_llama)
    t = _task()
    prompts = [build_prompt(t, it, 3, cot=False) for it in t.items]
    cached = generate_cached(lm, tok, prompts, 8, stops=["\nQuestion:"])
    batched = generate_batched(hf, hf_tok, prompts, 8, stops=["\nQuestion:"], batch_size=2)
    assert cached == batched
    assert any(cached)  # the random model does produce text


def _ragged_prompts() -> list[str]:
    t = _task()
    long_items = [Item(f"l{i}", "What is " + " + ".join(["1"] * (i + 1)) + "?", (str(i + 1),)) for i in range(6)]
    return [build_prompt(t, it, 2, cot=False) for it in (*t.items[:2], *long_items)]


def _varied_lm(**overrides: object) -> tuple[object, object]:
    """A tiny random LM whose greedy continuations differ from prompt to prompt (init_std 0.3)."""
    import torch

    from lmbricks.nn import LM, LMConfig
    from lmbricks.testing import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LMConfig.from_dict(dict(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                  intermediate_size=64, init_std=0.3, **overrides))  # fmt: skip
    return LM(cfg).eval(), tok


def _greedy_alone(lm: object, tok: object, prompt: str, n: int) -> str:
    import torch

    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])  # type: ignore[operator]
    out = lm.generate(ids, n)[0, ids.shape[1] :]  # type: ignore[attr-defined]
    return tok.decode(out, skip_special_tokens=True).strip()  # type: ignore[attr-defined]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.parametrize("stops", [[], ["a", "e"]])
def test_batched_cached_decoding_equals_each_prompt_alone(batch_size: int, stops: list[str]) -> None:
    """Rows of different lengths, left-padded after the shared prefix, decode as if alone; rows that
    stop early (a stop string) are dropped from the batch without changing the others."""
    lm, tok = _varied_lm()
    prompts = _ragged_prompts()
    lengths = {len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts}  # type: ignore[operator]
    assert len(lengths) > 3  # the batch really is ragged
    got = generate_cached(lm, tok, prompts, 12, stops=stops, batch_size=batch_size)
    want = [cut_at_stops(_greedy_alone(lm, tok, p, 12), stops).strip() for p in prompts]
    assert got == want
    assert len(set(want)) > 3  # the continuations differ
    if stops:
        assert len({len(w) for w in want}) > 2  # rows really stop at different steps


def test_batched_cached_decoding_with_sliding_window() -> None:
    """A sliding window shorter than the prompts: the batched path applies it like LM.generate."""
    lm, tok = _varied_lm(sliding_window=7)
    prompts = _ragged_prompts()
    want = [_greedy_alone(lm, tok, p, 5) for p in prompts]
    assert generate_cached(lm, tok, prompts, 5, stops=[], batch_size=4) == want
    full, _ = _varied_lm()
    assert want != [_greedy_alone(full, tok, p, 5) for p in prompts]  # the window matters here
