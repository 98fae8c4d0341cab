"""Tokenised and packed blocks, kept on disk by what they were made from.

Preparing the blocks (tokenising every text, packing them) runs on the CPU before the first step,
and an update cycle trains on the same replay stream again and again. A cache entry is keyed by
the content of the texts (with their salient spans), the tokenizer's identity (its full
serialised vocabulary and rules, not only its name), the block length, the packing and the
masking units; any change among them gives another key, so a stale entry is never read.
Entries are safetensors files written to a temporary name and renamed, so a crash never leaves a
half-written one; the oldest are pruned beyond ``max_entries``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from encoder.packing import Blocks, TrainText, as_span_text, build_blocks

log = logging.getLogger(__name__)

_FIELDS = ("input_ids", "position_ids", "segment_ids", "unit_ids", "salient")
_FORMAT = "kecl-blocks-1"  # bump when the layout of Blocks or the packing algorithm changes


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> str:
    """A digest of everything that decides how the tokenizer splits text: the serialised fast
    tokenizer (vocabulary, added tokens, normaliser, pre-tokeniser) and its special-token ids;
    not its truncation and padding state, which each call sets and which packing does not use."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    specials = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, type(tokenizer).__name__)
    return _digest_of(spec, repr(specials))


@functools.lru_cache(maxsize=64)
def _digest_of(spec: str, specials: str) -> str:
    try:
        parsed = json.loads(spec)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        parsed.pop("truncation", None)
        parsed.pop("padding", None)
        spec = json.dumps(parsed, sort_keys=True)
    return hashlib.sha256(f"{specials}\n{spec}".encode()).hexdigest()


def corpus_digest(texts: Sequence[TrainText]) -> str:
    """A digest of the texts in order, salient spans included."""
    h = hashlib.sha256()
    for i, item in enumerate(texts):
        span_text = as_span_text(item, f"text #{i}")
        h.update(len(span_text.text).to_bytes(8, "little"))
        h.update(span_text.text.encode("utf-8", "surrogatepass"))
        h.update(repr(span_text.salient_spans).encode())
    return h.hexdigest()


def blocks_key(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[TrainText],
    max_length: int,
    packing: str,
    whole_word_mask: bool,
) -> str:
    """The cache key of the blocks :func:`encoder.packing.build_blocks` makes from these inputs."""
    parts = (
        _FORMAT,
        corpus_digest(texts),
        tokenizer_identity(tokenizer),
        str(max_length),
        packing,
        str(whole_word_mask),
    )
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


def cached_blocks(
    cache_dir: str | Path | None,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[TrainText],
    max_length: int,
    packing: str,
    whole_word_mask: bool = False,
    max_entries: int = 32,
) -> tuple[Blocks, bool]:
    """The blocks of ``texts`` (as :func:`encoder.packing.build_blocks`), read from ``cache_dir``
    when an entry with the same key exists, else built and stored there. ``cache_dir=None``: no
    cache. Returns ``(blocks, hit)``. An unreadable entry is rebuilt (and overwritten); a cache
    that cannot be written only costs the next run the preparation again."""
    if cache_dir is None:
        return build_blocks(tokenizer, texts, max_length, packing, whole_word_mask), False
    folder = Path(cache_dir)
    path = folder / f"{blocks_key(tokenizer, texts, max_length, packing, whole_word_mask)}.safetensors"
    if path.is_file():
        try:
            tensors = load_file(str(path))
            blocks = Blocks(*(tensors[name] for name in _FIELDS))
            os.utime(path)  # recently used: pruned last
            return blocks, True
        except Exception as exc:  # noqa: BLE001 - a damaged entry is rebuilt, whatever the damage
            log.warning("block cache entry %s is unreadable (%s); rebuilding it", path, exc)
    blocks = build_blocks(tokenizer, texts, max_length, packing, whole_word_mask)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({name: getattr(blocks, name).contiguous() for name in _FIELDS}, str(tmp))
        os.replace(tmp, path)
        _prune(folder, max_entries)
    except OSError as exc:
        log.warning("could not write the block cache at %s (%s); continuing without it", folder, exc)
    return blocks, False


def _prune(folder: Path, max_entries: int) -> None:
    """Remove the least recently used entries beyond ``max_entries``."""
    entries = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[max_entries:]:
        stale.unlink(missing_ok=True)
