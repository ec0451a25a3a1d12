"""Tokenizer plumbing: the tiny in-code BPE, token bytes, and word-boundary streaming."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from models.moondream.config import TEMPLATE_TEXTS
from models.moondream.tokenizer import (
    WordChunker,
    build_tiny_tokenizer,
    bytes_to_unicode,
    encode,
    templates_from_texts,
    token_byte_table,
)

TOKENIZER = build_tiny_tokenizer()
TABLE = token_byte_table(TOKENIZER, 512)


def test_tiny_tokenizer_is_deterministic_and_has_eos_zero() -> None:
    assert build_tiny_tokenizer().to_str() == TOKENIZER.to_str()
    assert TOKENIZER.token_to_id("<|endoftext|>") == 0
    assert TOKENIZER.get_vocab_size() <= 512  # fits the tiny preset's vocab


def test_gpt2_byte_map_is_a_bijection() -> None:
    mapping = bytes_to_unicode()
    assert sorted(mapping) == list(range(256)) and len(set(mapping.values())) == 256
    assert mapping[ord("A")] == "A" and mapping[ord(" ")] == "\u0120"  # "Ġ"


def test_templates_encode_the_official_texts() -> None:
    templates = templates_from_texts(TOKENIZER)
    for skill, parts in TEMPLATE_TEXTS.items():
        for part, text in parts.items():
            assert TOKENIZER.decode(list(templates[skill][part])) == text


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_stream_rebuilds_the_text_and_cuts_only_at_word_boundaries(text: str) -> None:
    ids = encode(TOKENIZER, text)
    assert b"".join(TABLE[i] for i in ids) == text.encode("utf-8")
    stream = WordChunker(TABLE)
    chunks = [chunk for chunk in (stream.push(i) for i in ids) if chunk]
    tail = stream.finish()
    assert "".join(chunks) + tail == text == stream.text
    for chunk in chunks:
        assert (
            chunk[-1] in " \n\t" or 0x2F800 <= ord(chunk[-1]) <= 0x2FA1F or 0x3400 <= ord(chunk[-1]) <= 0x9FFF
        )
        assert "\ufffd" not in chunk or "\ufffd" in text  # never half a character


def test_multibyte_character_split_across_tokens_is_held_back() -> None:
    table = [b"ab ", b"\xc3", b"\xa9 ", b"\xe2\x82", b"\xac"]  # "é" and "€" split over tokens
    stream = WordChunker(table)
    assert stream.push(0) == "ab "
    assert stream.push(1) == ""  # half of "é": nothing to send yet
    assert stream.push(2) == "é "
    assert stream.push(3) == ""
    assert stream.push(4) == ""  # "€" complete but no word boundary yet
    assert stream.finish() == "€"
    assert stream.text == "ab é €"
