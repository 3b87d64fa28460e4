"""Token spelling: byte-level and SentencePiece vocabularies matched through the bytes they stand for."""

from __future__ import annotations

import json

from tests.tokens.conftest import CHAT_SPECIALS, DONOR_TEXT, bytelevel_tokenizer, sentencepiece_tokenizer

from lmbricks.tokens.spelling import detect_scheme, match_ids, token_bytes, token_key, vocab_keys


def test_bytelevel_spelling_is_decoded_to_bytes() -> None:
    assert token_bytes("Ġthe", "bytelevel") == b" the"
    assert token_bytes("Ã©", "bytelevel") == "é".encode()
    assert token_bytes("Ċ", "bytelevel") == b"\n"
    assert token_bytes("ä½", "bytelevel") == "你".encode()[:2]  # a part of a character


def test_sentencepiece_spelling_is_decoded_to_bytes() -> None:
    assert token_bytes("▁the", "sentencepiece") == b" the"
    assert token_bytes("<0x0A>", "sentencepiece") == b"\n"
    assert token_bytes("<0x0a>", "sentencepiece") == b"\n"
    assert token_bytes("<0x0G>", "sentencepiece") == b"<0x0G>"  # not a byte token
    assert token_bytes("▁the", "plain") == "▁the".encode()


def test_schemes_are_read_from_tokenizer_json() -> None:
    for tok, scheme in (
        (bytelevel_tokenizer(DONOR_TEXT, 300, CHAT_SPECIALS, "<|im_end|>"), "bytelevel"),
        (sentencepiece_tokenizer(DONOR_TEXT, 360), "sentencepiece"),
    ):
        assert detect_scheme(json.loads(tok.backend_tokenizer.to_str())) == scheme
    assert detect_scheme({"model": {"type": "WordPiece"}}) == "plain"


def test_special_tokens_match_only_special_tokens() -> None:
    assert token_key("<|im_end|>", "bytelevel", True) == (True, b"<|im_end|>")
    assert token_key("<|im_end|>", "bytelevel", True) != token_key("<|im_end|>", "bytelevel", False)


def test_a_bytelevel_and_a_sentencepiece_vocabulary_share_their_common_words() -> None:
    bl = bytelevel_tokenizer(DONOR_TEXT, 300, CHAT_SPECIALS, "<|im_end|>")
    sp = sentencepiece_tokenizer(DONOR_TEXT, 360)
    bl_vocab, sp_vocab = bl.get_vocab(), sp.get_vocab()
    bl_keys = vocab_keys(bl_vocab, "bytelevel", CHAT_SPECIALS)
    sp_keys = vocab_keys(sp_vocab, "sentencepiece", ["<unk>", "<s>", "</s>"])
    index = match_ids(bl_keys, sp_keys, max(sp_vocab.values()) + 1)
    assert int(index[sp_vocab["▁the"]]) == bl_vocab["Ġthe"]
    assert int(index[sp_vocab["<0x0A>"]]) == bl_vocab["Ċ"]  # byte fallback -> the byte-level newline
    assert int(index[sp_vocab["<s>"]]) == -1  # a special token the byte-level side lacks
    # every match stands for the same bytes on both sides
    sp_tokens = {i: t for t, i in sp_vocab.items()}
    bl_tokens = {i: t for t, i in bl_vocab.items()}
    matched = (index >= 0).nonzero().squeeze(1).tolist()
    assert len(matched) > 100
    for j in matched:
        assert token_bytes(sp_tokens[j], "sentencepiece") == token_bytes(bl_tokens[int(index[j])], "bytelevel")


def test_a_text_spelled_twice_maps_to_the_lowest_id() -> None:
    model = {5: (False, b" "), 2: (False, b" "), 7: (False, b"a")}
    donor = {0: (False, b"a"), 1: (False, b" "), 3: (False, b"zz")}
    assert match_ids(model, donor, 4).tolist() == [7, 2, -1, -1]
