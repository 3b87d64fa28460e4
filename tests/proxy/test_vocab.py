"""The vocabulary check: identical, extended (truncated) and mismatched vocabularies."""

from __future__ import annotations

import pytest

from lmbricks.errors import ConfigError
from lmbricks.proxy import check_shared_vocab, shared_vocab_size, token_list
from lmbricks.testing import build_tiny_tokenizer


def test_identical_and_extended() -> None:
    base = ["<s>", "a", "b", "ab"]
    assert check_shared_vocab(base, list(base), "expert") == 4
    assert check_shared_vocab(base, [*base, "<extra_0>", "<extra_1>"], "expert") == 4


def test_first_differing_token_is_named() -> None:
    with pytest.raises(ConfigError, match=r"token id 2 is 'b' in the base but 'c' in the anti-expert"):
        check_shared_vocab(["<s>", "a", "b", "x"], ["<s>", "a", "c", "y"], "anti-expert")
    with pytest.raises(ConfigError, match=r"lacks token id 3 \('ab'\)"):
        check_shared_vocab(["<s>", "a", "b", "ab"], ["<s>", "a", "b"], "expert")
    with pytest.raises(ConfigError, match=r"token id 0 is '<s>' in the base but '</s>'"):
        check_shared_vocab(["<s>", "a"], ["</s>", "a"], "expert")  # the first id is compared too


def test_real_tokenizers() -> None:
    base = build_tiny_tokenizer()
    extended = build_tiny_tokenizer()
    extended.add_tokens(["<tool_call>", "<tool_result>"])
    assert len(token_list(extended)) == len(token_list(base)) + 2
    dims = {"base": len(base), "expert": len(extended), "anti-expert": len(base)}
    assert shared_vocab_size(base, {"expert": extended, "anti-expert": base}, dims) == len(base)
    other = build_tiny_tokenizer(vocab_size=300)  # fewer merges: ids past the alphabet differ or run out
    with pytest.raises(ConfigError, match="token id|lacks token"):
        shared_vocab_size(base, {"expert": other}, {"base": len(base), "expert": len(other)})
    with pytest.raises(ConfigError, match="outputs 10 logits"):
        shared_vocab_size(base, {}, {"base": 10})
    n = len(base)
    with pytest.raises(ConfigError, match=f"outputs {n - 1} logits, fewer than the {n} tokens"):
        shared_vocab_size(base, {}, {"base": n, "expert": n - 1})  # one logit short is refused
    assert shared_vocab_size(base, {}, {"base": n, "expert": n}) == n  # exactly the vocabulary is fine
