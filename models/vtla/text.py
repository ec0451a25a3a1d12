"""Instruction -> token ids: the checkpoint's ``tokenizer.json`` (or the tiny byte-level one).

Simulators resend the same instruction every control step, so prompts are tokenised once and
kept in a small LRU keyed by the instruction string.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from models.vtla.config import INSTRUCTION_FIELD, PromptConfig

SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>")
PROMPT_CACHE_SIZE = 1024


def build_byte_tokenizer() -> Tokenizer:
    """A byte-level tokenizer without merges: 256 byte symbols + special tokens, no download.

    Every UTF-8 string is representable, one token per byte; ids are stable across runs.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


class PromptEncoder:
    """Tokenises ``prompt.template`` around an instruction into (before-image, after-image) ids."""

    def __init__(self, tokenizer: Tokenizer, prompt: PromptConfig, vocab_size: int) -> None:
        if tokenizer.get_vocab_size(with_added_tokens=True) > vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.get_vocab_size(with_added_tokens=True)} tokens, "
                f"more than the model's vocab_size {vocab_size}"
            )
        self._tokenizer = tokenizer
        self._prompt = prompt
        self._before, self._after = prompt.split()
        self.encode = functools.lru_cache(maxsize=PROMPT_CACHE_SIZE)(self._encode)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def resolve(self, instruction: str | None) -> str:
        return self._prompt.default_instruction if instruction is None else instruction

    def _encode(self, instruction: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        before = self._fill(self._before, instruction)
        after = self._fill(self._after, instruction)
        return self._ids(before), self._ids(after)

    def _ids(self, text: str) -> tuple[int, ...]:
        if not text:
            return ()
        return tuple(self._tokenizer.encode(text, add_special_tokens=False).ids)

    @staticmethod
    def _fill(part: str, instruction: str) -> str:
        # str.replace, not str.format: instructions may contain braces.
        return part.replace(INSTRUCTION_FIELD, instruction)
