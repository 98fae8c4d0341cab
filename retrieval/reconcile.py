"""Keeping the index equal to SQL, and building one from SQL passages.

SQL is the source of truth; FAISS ids are passage ids. ``reconcile`` embeds passages that SQL has
and the index lacks, and removes ids the index has and SQL no longer does. Run at start-up, it
heals a crash between the SQL commit and the index write. No SQL here: the caller passes the set
of passage ids and functions that fetch texts and, optionally, the vectors already stored for them
(the process that received a passage embedded it once; everyone else reads that vector).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.embedder import TextEmbedder
from retrieval.index import IndexConfig, PassageIndex, choose_kind

log = logging.getLogger(__name__)

FetchTexts = Callable[[Sequence[int]], Mapping[int, str]]
FetchVectors = Callable[[str, Sequence[int]], Mapping[int, bytes]]
"""(embedder version, passage ids) -> the little-endian float32 vectors stored for them by that embedder."""


class EmbedderMismatchError(RuntimeError):
    """The index was built by another embedder version; it must be rebuilt, not patched."""


@dataclass
class ReconcileReport:
    """What ``reconcile`` changed: ids added (embedded, or ``read`` of them from stored vectors)
    and removed, the count after, seconds taken, whether the HNSW graph was compacted, and whether
    IVF-PQ needs a rebuild."""

    added: int = 0
    read: int = 0
    removed: int = 0
    missing_texts: int = 0  # ids SQL listed but fetch_texts did not return (deleted meanwhile)
    count: int = 0
    seconds: float = 0.0
    compacted: bool = False
    needs_retrain: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.compacted)


def stored_vectors(
    embedder: TextEmbedder, ids: Sequence[int], fetch_vectors: FetchVectors | None
) -> dict[int, np.ndarray]:
    """The vectors stored for ``ids`` by the embedder's version, those of its width (a stored
    vector of another width is never put in)."""
    if fetch_vectors is None or not ids:
        return {}
    found = {}
    for pid, raw in fetch_vectors(embedder.version, list(ids)).items():
        vector = np.frombuffer(raw, dtype="<f4")
        if vector.shape == (embedder.dim,):
            found[pid] = vector
    return found


def read_or_embed(
    embedder: TextEmbedder, ids: Sequence[int], fetch_texts: FetchTexts, fetch_vectors: FetchVectors | None = None
) -> tuple[list[int], np.ndarray, int]:
    """Vectors of the passages ``ids`` that still exist: the one stored for the embedder's version
    where there is one (:func:`stored_vectors`), else embedded from its text (texts fetched only for
    those). Returns the ids found (the read ones first), their vectors and how many were read."""
    stored = stored_vectors(embedder, ids, fetch_vectors)
    missing = [pid for pid in ids if pid not in stored]
    texts = fetch_texts(missing) if missing else {}
    made = [pid for pid in ids if pid in texts]
    parts = [np.stack(list(stored.values()))] if stored else []
    if made:
        parts.append(embedder.encode([texts[pid] for pid in made]))
    vectors = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, embedder.dim), dtype=np.float32)
    return [*stored, *made], vectors, len(stored)


def embed_and_add(
    index: PassageIndex,
    embedder: TextEmbedder,
    items: Sequence[tuple[int, str]],
    fetch_vectors: FetchVectors | None = None,
) -> int:
    """Add ``(passage_id, text)`` pairs to ``index``, embedded or read (see :func:`read_or_embed`).
    Returns how many."""
    texts = dict(items)
    ids, vectors, _ = read_or_embed(embedder, list(texts), lambda wanted: {i: texts[i] for i in wanted}, fetch_vectors)
    if ids:
        index.add(np.array(ids, dtype=np.int64), vectors)
    return len(ids)


def reconcile(
    index: PassageIndex,
    embedder: TextEmbedder,
    sql_ids: Iterable[int],
    fetch_texts: FetchTexts,
    batch_size: int = 1000,
    lock: Callable[[], Any] | None = None,
    fetch_vectors: FetchVectors | None = None,
) -> ReconcileReport:
    """Make ``index`` hold exactly ``sql_ids``: add the missing ones (their stored vectors from
    ``fetch_vectors`` where the embedder made one, else embedded from ``fetch_texts``), remove the
    extra ones, compact HNSW tombstones when due. Stamps the
    embedder version on an unstamped index. Returns a ReconcileReport. Raises
    EmbedderMismatchError when the index was built with a different embedder version.

    ``lock``: a callable returning a context manager (e.g. a write lock) held while the index is
    read or changed, but not while texts are fetched and embedded."""
    guard = lock or contextlib.nullcontext
    start = time.perf_counter()
    if index.embedder_version is None:
        index.embedder_version = embedder.version
    elif index.embedder_version != embedder.version:
        raise EmbedderMismatchError(
            f"index built with embedder {index.embedder_version!r}, asked to reconcile "
            f"with {embedder.version!r}; rebuild it (kecl index build)"
        )
    want = np.fromiter(sql_ids, dtype=np.int64)
    with guard():
        have = index.ids()
        extra = np.setdiff1d(have, want, assume_unique=False)
        missing = np.setdiff1d(want, have, assume_unique=False)
        report = ReconcileReport()
        report.removed = index.remove(extra)
    for start_at in range(0, len(missing), batch_size):
        chunk = [int(i) for i in missing[start_at : start_at + batch_size]]
        ids, vectors, read = read_or_embed(embedder, chunk, fetch_texts, fetch_vectors)
        report.missing_texts += len(chunk) - len(ids)
        if ids:
            with guard():
                index.add(np.array(ids, dtype=np.int64), vectors)
            report.added += len(ids)
            report.read += read
    with guard():
        if index.needs_compaction:
            index.compact()
            report.compacted = True
        report.needs_retrain = index.needs_retrain
        report.count = len(index)
    report.seconds = time.perf_counter() - start
    if report.changed:
        log.info(
            "reconciled index with SQL: +%d (%d of them read) -%d -> %d vectors",
            report.added,
            report.read,
            report.removed,
            report.count,
        )
    return report


def build_from_passages(
    embedder: TextEmbedder,
    iter_passages: Callable[[], Iterable[Sequence[tuple[int, str]]]] | Iterable[Sequence[tuple[int, str]]],
    *,
    kind: str | None = None,
    expected_count: int | None = None,
    settings: Any = None,
    config: IndexConfig | None = None,
    fetch_vectors: FetchVectors | None = None,
) -> PassageIndex:
    """A new index over every ``(passage_id, text)`` batch that ``iter_passages`` yields (a
    callable returning an iterator, or the iterator itself), embedded with ``embedder`` (or read
    with ``fetch_vectors``, see :func:`read_or_embed`). The kind is ``kind``, else
    ``choose_kind(expected_count, settings)``."""
    kind = kind or choose_kind(expected_count or 0, settings)
    if config is None and settings is not None:
        config = IndexConfig.from_settings(settings)
    index = PassageIndex(kind, embedder.dim, config, embedder.version)
    batches = iter_passages() if callable(iter_passages) else iter_passages
    n = 0
    for batch in batches:
        n += embed_and_add(index, embedder, list(batch), fetch_vectors)
    log.info("built %s index over %d passages with %s", kind, n, embedder.version)
    return index
