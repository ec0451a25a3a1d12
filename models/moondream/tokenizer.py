"""Tokenizer loading (local ``tokenizer.json`` only), the tiny preset's in-code tokenizer, and
streaming detokenization that flushes at word boundaries without splitting a UTF-8 character.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from models.moondream.config import TEMPLATE_TEXTS

EOS_TEXT = "<|endoftext|>"

# A fixed corpus for the tiny preset's byte-level BPE: deterministic, nothing downloaded.
_TINY_CORPUS = (
    "Short caption: a robot arm picks up a red cube from the table.",
    "Caption: the gripper holds a blue block above a wooden tray next to a green ball.",
    "Long caption: a white robot stands in a bright room; the camera sees cups, plates and boxes.",
    "Question: what color is the object on the left? Answer: it is red.",
    "Detect: cube, block, ball, cup, person, hand, gripper, bottle.",
    "Point: the handle of the mug, the center of the plate, the top of the box.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps near the window.",
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def load_tokenizer(path: Path) -> Tokenizer:
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    return Tokenizer.from_file(str(path))


def build_tiny_tokenizer(vocab_size: int = 400) -> Tokenizer:
    """A small byte-level BPE trained in code on a fixed corpus; ``<|endoftext|>`` has id 0."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TEXT],
        initial_alphabet=sorted(pre_tokenizers.ByteLevel.alphabet()),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_TINY_CORPUS), trainer=trainer)
    return tokenizer


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False).ids)


def templates_from_texts(tokenizer: Tokenizer) -> dict[str, dict[str, tuple[int, ...]]]:
    """Prompt template ids for a tokenizer other than the official one (the tiny preset)."""
    return {
        skill: {part: tuple(encode(tokenizer, text)) for part, text in parts.items()}
        for skill, parts in TEMPLATE_TEXTS.items()
    }


def token_byte_table(tokenizer: Tokenizer, vocab_size: int) -> list[bytes]:
    """Raw bytes of every token id below ``vocab_size`` (ids past the tokenizer's vocab -> b"")."""
    byte_of_char = {ch: b for b, ch in bytes_to_unicode().items()}
    special = {tok.content for tok in tokenizer.get_added_tokens_decoder().values()}
    table: list[bytes] = []
    for token_id in range(vocab_size):
        piece = tokenizer.id_to_token(token_id)
        if piece is None:
            table.append(b"")
        elif piece in special or not all(ch in byte_of_char for ch in piece):
            table.append(tokenizer.decode([token_id], skip_special_tokens=False).encode("utf-8"))
        else:
            table.append(bytes(byte_of_char[ch] for ch in piece))
    return table


def _is_cjk(char: str) -> bool:
    cp = ord(char)
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x2F800 <= cp <= 0x2FA1F


class WordChunker:
    """Turns token ids into text chunks that end at a word boundary.

    ``push`` returns text ready to send (ending in whitespace or a CJK character) or ``""``;
    bytes of an unfinished UTF-8 character are held back. ``finish`` returns the rest.
    ``text`` is everything pushed so far, decoded.
    """

    def __init__(self, token_bytes: Sequence[bytes]) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._emitted: list[str] = []

    def push(self, token_id: int) -> str:
        piece = self._token_bytes[token_id] if 0 <= token_id < len(self._token_bytes) else b""
        self._pending += self._decoder.decode(piece)
        if not self._pending:
            return ""
        if _is_cjk(self._pending[-1]):
            cut = len(self._pending)
        else:
            cut = max(self._pending.rfind(" "), self._pending.rfind("\n"), self._pending.rfind("\t")) + 1
        if cut == 0:
            return ""
        chunk, self._pending = self._pending[:cut], self._pending[cut:]
        self._emitted.append(chunk)
        return chunk

    def finish(self) -> str:
        chunk = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if chunk:
            self._emitted.append(chunk)
        return chunk

    @property
    def text(self) -> str:
        return "".join(self._emitted) + self._pending


def describe_tokenizer(tokenizer: Tokenizer) -> Mapping[str, int]:
    return {"vocab_size": tokenizer.get_vocab_size(with_added_tokens=True)}
