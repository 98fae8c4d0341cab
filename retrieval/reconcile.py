"""Keeping the index equal to SQL, and building one from SQL passages.

SQL is the source of truth; FAISS ids are passage ids. ``reconcile`` embeds passages that SQL has
and the index lacks, and removes ids the index has and SQL no longer does. Run at start-up, it
heals a crash between the SQL commit and the index write. No SQL here: the caller passes the set
of passage ids and a function that fetches texts.
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


class EmbedderMismatchError(RuntimeError):
    """The index was built by another embedder version; it must be rebuilt, not patched."""


@dataclass
class ReconcileReport:
    """What ``reconcile`` changed: ids added (embedded) and removed, the count after, seconds
    taken, whether the HNSW graph was compacted, and whether IVF-PQ needs a rebuild."""

    added: int = 0
    removed: int = 0
    missing_texts: int = 0  # ids SQL listed but fetch_texts did not return (deleted meanwhile)
    count: int = 0
    seconds: float = 0.0
    compacted: bool = False
    needs_retrain: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.compacted)


def embed_and_add(index: PassageIndex, embedder: TextEmbedder, items: Sequence[tuple[int, str]]) -> int:
    """Embed ``(passage_id, text)`` pairs and add them to ``index``. Returns how many."""
    if not items:
        return 0
    ids = np.fromiter((pid for pid, _ in items), dtype=np.int64, count=len(items))
    index.add(ids, embedder.encode([text for _, text in items]))
    return len(items)


def reconcile(
    index: PassageIndex,
    embedder: TextEmbedder,
    sql_ids: Iterable[int],
    fetch_texts: FetchTexts,
    batch_size: int = 1000,
    lock: Callable[[], Any] | None = None,
) -> ReconcileReport:
    """Make ``index`` hold exactly ``sql_ids``: embed and add the missing ones (texts from
    ``fetch_texts``), remove the extra ones, compact HNSW tombstones when due. Stamps the
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
        texts = fetch_texts(chunk)
        items = [(pid, texts[pid]) for pid in chunk if pid in texts]
        report.missing_texts += len(chunk) - len(items)
        if items:
            vectors = embedder.encode([text for _, text in items])
            with guard():
                index.add(np.array([pid for pid, _ in items], dtype=np.int64), vectors)
            report.added += len(items)
    with guard():
        if index.needs_compaction:
            index.compact()
            report.compacted = True
        report.needs_retrain = index.needs_retrain
        report.count = len(index)
    report.seconds = time.perf_counter() - start
    if report.changed:
        log.info("reconciled index with SQL: +%d -%d -> %d vectors", report.added, report.removed, report.count)
    return report


def build_from_passages(
    embedder: TextEmbedder,
    iter_passages: Callable[[], Iterable[Sequence[tuple[int, str]]]] | Iterable[Sequence[tuple[int, str]]],
    *,
    kind: str | None = None,
    expected_count: int | None = None,
    settings: Any = None,
    config: IndexConfig | None = None,
) -> PassageIndex:
    """A new index over every ``(passage_id, text)`` batch that ``iter_passages`` yields (a
    callable returning an iterator, or the iterator itself), embedded with ``embedder``. The kind
    is ``kind``, else ``choose_kind(expected_count, settings)``."""
    kind = kind or choose_kind(expected_count or 0, settings)
    if config is None and settings is not None:
        config = IndexConfig.from_settings(settings)
    index = PassageIndex(kind, embedder.dim, config, embedder.version)
    batches = iter_passages() if callable(iter_passages) else iter_passages
    n = 0
    for batch in batches:
        n += embed_and_add(index, embedder, list(batch))
    log.info("built %s index over %d passages with %s", kind, n, embedder.version)
    return index
