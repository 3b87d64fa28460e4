"""Packing keeps examples whole, and packed examples never attend across their boundaries."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lmbricks.errors import ConfigError
from lmbricks.nn import LM, LMConfig, lm_loss
from lmbricks.sft import IGNORE, encode_example, pack_examples, unpack_block
from lmbricks.sft.encode import Encoded
from lmbricks.sft.schema import Example


def _tiny_lm(vocab: int, moe: bool = False, seed: int = 0) -> LM:
    torch.manual_seed(seed)
    fields: dict[str, Any] = dict(
        vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64
    )
    if moe:
        fields["moe"] = dict(num_experts=4, top_k=2, intermediate_size=32, capacity_factor=None)
    return LM(LMConfig.from_dict(fields)).eval()


def test_packing_keeps_examples_whole(tok: Any, chats: list[Example]) -> None:
    enc = [encode_example(tok, ex) for ex in chats]
    seq_len = max(len(e) for e in enc) + 10
    blocks = pack_examples(enc, seq_len, pad_id=0)
    assert blocks.shape[1:] == (3, seq_len)
    got = [pair for b in blocks for pair in unpack_block(b)]
    assert len(got) == len(enc)
    originals = {tuple(e.input_ids.tolist()): e.labels for e in enc}
    for ids, labels in got:
        assert torch.equal(originals[tuple(ids.tolist())], labels)
    pad = blocks[:, 2] == -1
    assert bool((blocks[:, 1][pad] == IGNORE).all())
    assert len(blocks) < len(enc)  # something was actually packed together


def test_too_long_example_names_record() -> None:
    ex = Encoded(torch.arange(20), torch.arange(20), where="x.jsonl: record 3")
    with pytest.raises(ConfigError, match="x.jsonl: record 3: 20 tokens"):
        pack_examples([ex], 16, pad_id=0)


@pytest.mark.parametrize("moe", [False, True])
def test_packed_logits_equal_separate_logits(tok: Any, chats: list[Example], moe: bool) -> None:
    lm = _tiny_lm(len(tok), moe=moe)
    enc = [encode_example(tok, ex) for ex in chats]
    blocks = pack_examples(enc, sum(len(e) for e in enc), pad_id=0)
    assert len(blocks) == 1  # all four examples share one block
    ids, _, docs = blocks[0]
    packed = lm(ids[None], doc_ids=docs[None]).logits[0]  # (T, V)
    pos = 0
    for e in enc:  # first-fit in order with room for all: examples sit in their original order
        alone = lm(e.input_ids[None]).logits[0]
        torch.testing.assert_close(packed[pos : pos + len(e)], alone, atol=1e-5, rtol=1e-5)
        pos += len(e)


def test_changing_one_example_leaves_the_others_untouched(tok: Any, chats: list[Example]) -> None:
    lm = _tiny_lm(len(tok))
    enc = [encode_example(tok, ex) for ex in chats[:2]]
    blocks = pack_examples(enc, 200, pad_id=0)
    ids, _, docs = blocks[0]
    n0 = len(enc[0])
    other = ids.clone()
    other[:n0] = torch.randint(3, len(tok), (n0,), generator=torch.Generator().manual_seed(1))
    a = lm(ids[None], doc_ids=docs[None]).logits[0]
    b = lm(other[None], doc_ids=docs[None]).logits[0]
    assert not torch.allclose(a[:n0], b[:n0])
    torch.testing.assert_close(a[n0:], b[n0:], atol=1e-6, rtol=1e-6)
    # without segment ids (plain causal attention) the second example would see the first
    c = lm(other[None]).logits[0]
    d = lm(ids[None]).logits[0]
    assert not torch.allclose(c[n0 : n0 + len(enc[1])], d[n0 : n0 + len(enc[1])])


def test_masked_loss_is_mean_over_response_targets(tok: Any, chats: list[Example]) -> None:
    lm = _tiny_lm(len(tok))
    enc = [encode_example(tok, ex) for ex in chats]
    ids, labels, docs = pack_examples(enc, 400, pad_id=0)[0]
    logits = lm(ids[None], doc_ids=docs[None]).logits
    loss = lm_loss(logits, ids[None], labels[None])
    logp = torch.log_softmax(logits[0].float(), -1)
    terms = [-logp[t, labels[t + 1]] for t in range(len(ids) - 1) if labels[t + 1] != IGNORE]
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    # prompt tokens carry no loss: changing their targets (not their inputs) changes nothing
    labels2 = labels.clone()
    assert torch.equal(lm_loss(logits, ids[None] * 0, labels2[None]), loss)
