"""Sentence-aware chunking of documents into passages that fit a token budget."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace.
# Abbreviation-proof splitting is not needed: a passage boundary inside a sentence only costs a
# little context, while the budget is what matters for the encoder.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")
_WORDPIECE_ISH = re.compile(r"\w+|[^\w\s]")
MAX_WORD_CHARS = 100
"""Longer "words" are cut into pieces of this many characters: WordPiece reads any longer word as
one [UNK], so a 1 MB string without spaces would otherwise be a one-token, 1 MB passage."""
_WORD = re.compile(rf"\S{{1,{MAX_WORD_CHARS}}}")
_LONG_WORD = re.compile(rf"\S{{{MAX_WORD_CHARS + 1}}}")


def approximate_token_count(text: str) -> int:
    """Words and punctuation marks: close to a WordPiece count for English, without a tokenizer."""
    return len(_WORDPIECE_ISH.findall(text))


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int
    end: int
    token_count: int


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (whitespace between them excluded)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.start() > start:
            spans.append((start, match.start()))
        start = match.end()
    if start < len(text) and text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def chunk_text(
    text: str,
    max_tokens: int = 96,
    count_tokens: Callable[[str], int] = approximate_token_count,
) -> list[Chunk]:
    """Pack whole sentences into chunks of at most ``max_tokens``.

    A sentence longer than the budget is cut at word boundaries, and a word longer than
    :data:`MAX_WORD_CHARS` into pieces of that size. Chunks never overlap and their spans index
    into ``text``. Raises ``ValueError`` if ``max_tokens`` < 1.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    pieces: list[tuple[int, int, int]] = []
    for s, e in split_sentences(text):
        n = count_tokens(text[s:e])
        if n <= max_tokens and not _LONG_WORD.search(text, s, e):
            pieces.append((s, e, n))
        else:
            pieces.extend(_split_long(text, s, e, max_tokens, count_tokens))
    chunks: list[Chunk] = []
    cur_start = cur_end = -1
    cur_tokens = 0
    for s, e, n in pieces:
        if cur_start >= 0 and cur_tokens + n <= max_tokens:
            cur_end, cur_tokens = e, cur_tokens + n
            continue
        if cur_start >= 0:
            chunks.append(Chunk(text[cur_start:cur_end], cur_start, cur_end, cur_tokens))
        cur_start, cur_end, cur_tokens = s, e, n
    if cur_start >= 0:
        chunks.append(Chunk(text[cur_start:cur_end], cur_start, cur_end, cur_tokens))
    return chunks


def _split_long(
    text: str, start: int, end: int, max_tokens: int, count_tokens: Callable[[str], int]
) -> list[tuple[int, int, int]]:
    # Words are counted one by one and summed: the pieces of a cut word are not separated by
    # spaces, so counting a span of them would see one word (and would cost quadratic time).
    words = [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]
    out: list[tuple[int, int, int]] = []
    i = 0
    while i < len(words):
        j, n = i + 1, count_tokens(text[words[i][0] : words[i][1]])
        while j < len(words):
            m = n + count_tokens(text[words[j][0] : words[j][1]])
            if m > max_tokens:
                break
            j, n = j + 1, m
        out.append((words[i][0], words[j - 1][1], n))
        i = j
    return out
