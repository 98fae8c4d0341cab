"""Knowledge sources for evaluation: what the query pipeline would inject, per probe text.

:func:`updater.evaluate` and the update cycle take a :data:`updater.KnowledgeSource`
(``(texts, mode) → (facts, passages)``), so that updater knows nothing of kecl; these build one
from the running system's retrieval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from encoder import InjectedFact, InjectedPassage, MLMBundle
from kecl.pipeline import MASK_PATTERN, KnowledgeAccess, Prepared, QueryOptions, retrieve, select_facts
from kecl.search import SearchHit, hybrid_search
from knowledge import KnowledgeStore
from retrieval import CoalescingEmbedder, IndexHandle
from updater import CandidateSource, KnowledgeSource

KNOWLEDGE_KINDS = ("all", "passages", "facts")


class IndexedKnowledge(KnowledgeAccess, Protocol):
    """The pipeline's view of the system, plus the passage index and its embedder (queries are
    embedded in batches here)."""

    @property
    def index(self) -> IndexHandle: ...

    @property
    def embedder(self) -> CoalescingEmbedder: ...


def pipeline_source(system: KnowledgeAccess) -> KnowledgeSource:
    """Facts and passages exactly as a query in ``mode`` retrieves them (``retrieval.k`` passages)."""

    def source(texts: Sequence[str], mode: str) -> tuple[list[list[InjectedFact]], list[list[InjectedPassage]]]:
        opts = QueryOptions(mode=mode, k_passages=system.settings.retrieval.k)  # type: ignore[arg-type]
        prepared = [retrieve(system, t, opts) for t in texts]
        return [p.facts for p in prepared], [p.passages for p in prepared]

    return source


def pipeline_retrieval(system: IndexedKnowledge) -> tuple[KnowledgeSource, CandidateSource]:
    """A knowledge source and a candidate source that share one retrieval per (text, mode), exactly
    as a query in ``mode`` retrieves (``kecl.pipeline.retrieve``), for an update cycle: its reading
    exercises, the active model's and the candidate's evaluations all ask for the same texts, and
    retrieval depends neither on the MLM nor on which of them asks. A batch's search queries are
    embedded in one call (one forward pass instead of one per text)."""
    cache: dict[tuple[str, str], Prepared] = {}

    def prepare(texts: Sequence[str], mode: str) -> list[Prepared]:
        missing = [t for t in dict.fromkeys(texts) if (t, mode) not in cache]
        if missing:
            opts = QueryOptions(mode=mode, k_passages=system.settings.retrieval.k)  # type: ignore[arg-type]
            reader: KnowledgeAccess = system
            if mode != "closed-book" and opts.k_passages > 0:
                reader = _embedded_once(system, missing)
            for t in missing:
                cache[(t, mode)] = retrieve(reader, t, opts)
        return [cache[(t, mode)] for t in texts]

    def knowledge(texts: Sequence[str], mode: str) -> tuple[list[list[InjectedFact]], list[list[InjectedPassage]]]:
        prepared = prepare(texts, mode)
        return [p.facts for p in prepared], [p.passages for p in prepared]

    def candidates(texts: Sequence[str], mode: str) -> list[list[Any]]:
        return [list(p.candidates) for p in prepare(texts, mode)]

    return knowledge, candidates


def _embedded_once(system: IndexedKnowledge, texts: Sequence[str]) -> _BatchEmbedded:
    """``system`` with the search queries of ``texts`` (their masks blanked, as
    :func:`kecl.pipeline.select_passages` searches) embedded in one call."""
    queries = sorted({q for q in (MASK_PATTERN.sub(" ", t) for t in texts) if q.strip()})
    return _BatchEmbedded(system, dict(zip(queries, system.embedder.encode(queries))) if queries else {})


class _BatchEmbedded:
    """``system`` for the query pipeline, its searches reading query vectors embedded beforehand in
    one batch (a query without one, e.g. cut to the encoder's budget, is embedded as usual)."""

    def __init__(self, system: IndexedKnowledge, vectors: dict[str, Any]) -> None:
        self._system = system
        self._vectors = vectors
        self.settings = system.settings

    @property
    def store(self) -> KnowledgeStore:
        return self._system.store

    @property
    def encoder(self) -> MLMBundle:
        return self._system.encoder

    def snapshot(self) -> dict[str, Any]:
        return self._system.snapshot()

    def search(self, query: str, k: int = 4) -> list[SearchHit]:
        if query not in self._vectors:
            return self._system.search(query, k)
        embedder = self._system.embedder
        return hybrid_search(
            query,
            k,
            store=self.store,
            index_handle=self._system.index,
            embedder=_Precomputed(self._vectors, embedder.version, embedder.dim),
            weights=self.settings.retrieval,
        )


class _Precomputed:
    """An embedder that answers from vectors computed beforehand in one batch."""

    def __init__(self, vectors: dict[str, Any], version: str, dim: int) -> None:
        self.vectors = vectors
        self.version = version
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def cached_source(
    system: IndexedKnowledge, opts: QueryOptions | None = None, kind: str = "all", cache: dict[str, Any] | None = None
) -> KnowledgeSource:
    """A :data:`updater.KnowledgeSource` backed by the query pipeline's retrieval.

    ``kind``: ``"all"`` (facts and passages, as ``kecl query`` injects them), ``"passages"``
    (retrieved text only: the honest open-book setting when the store holds the probed facts
    themselves) or ``"facts"``. Facts come from ``kecl.pipeline.select_facts``; passages from the
    same hybrid search as ``kecl query``, except that a batch's queries are embedded in one call
    (one forward pass instead of one per probe). Retrieval does not depend on the mode or the
    MLM, so each text is retrieved once and kept in ``cache`` (share one dict between sources of
    different ``kind`` to retrieve once for all). Raises ``ValueError`` for an unknown ``kind``.
    """
    if kind not in KNOWLEDGE_KINDS:
        raise ValueError(f"knowledge kind {kind!r}: expected one of {KNOWLEDGE_KINDS}")
    opts = replace(opts or QueryOptions(), mode="concat")
    cache = {} if cache is None else cache

    def fetch(texts: list[str]) -> None:
        reader = _embedded_once(system, texts) if opts.k_passages > 0 else None
        for text in texts:
            facts, _ = select_facts(system, text, opts)
            query = MASK_PATTERN.sub(" ", text)
            hits = reader.search(query, opts.k_passages) if reader is not None and query.strip() else []
            cache[text] = (facts, [InjectedPassage(h.text, h.score, h.passage_id) for h in hits])

    def source(texts: Sequence[str], mode: str) -> tuple[list[list[InjectedFact]], list[list[InjectedPassage]]]:
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            fetch(missing)
        facts = [cache[t][0] if kind != "passages" else [] for t in texts]
        passages = [cache[t][1] if kind != "facts" else [] for t in texts]
        return facts, passages

    return source
