"""Hybrid passage retrieval: dense (FAISS), lexical (the database's full-text engine) and entity
(passages mentioning the query's linked entities) rankings fused by reciprocal rank fusion.

Dense search alone misses rare names (a MiniLM vector of "X was born in [MASK]" says little
about X); full-text search and the mention table find them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kecl.threads import adopt_width
from knowledge import KnowledgeStore
from retrieval import IndexHandle, TextEmbedder, reciprocal_rank_fusion

log = logging.getLogger("kecl.search")

CHANNELS = ("dense", "lexical", "entity")


@dataclass
class SearchHit:
    """One fused result: the passage, its fused score, its rank (1-based) and raw score in each
    channel that found it, and its document."""

    passage_id: int
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    channel_scores: dict[str, float] = field(default_factory=dict)
    text: str = ""
    document_id: int | None = None
    title: str | None = None
    source: str | None = None
    published_at: dt.date | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["published_at"] = self.published_at.isoformat() if self.published_at else None
        return d


def _weights(weights: Any) -> tuple[dict[str, float], int]:
    """Channel weights and rrf_k from a RetrievalSettings-like object or a plain mapping."""
    if weights is None:
        return {c: 1.0 for c in CHANNELS}, 60
    if isinstance(weights, Mapping):
        return {c: float(weights.get(c, 1.0)) for c in CHANNELS}, int(weights.get("rrf_k", 60))
    return (
        {"dense": weights.dense_weight, "lexical": weights.lexical_weight, "entity": weights.entity_weight},
        int(weights.rrf_k),
    )


def channel_rankings(
    query: str,
    depth: int,
    *,
    store: KnowledgeStore,
    index_handle: IndexHandle | None,
    embedder: TextEmbedder | None = None,
    entity_ids: Sequence[int] | None = None,
    allowed_ids: Iterable[int] | None = None,
    channels: Iterable[str] = CHANNELS,
) -> dict[str, list[tuple[int, float]]]:
    """Each channel's ``(passage_id, score)`` list, best first, at most ``depth`` long."""
    allowed = None if allowed_ids is None else set(int(i) for i in allowed_ids)
    out: dict[str, list[tuple[int, float]]] = {}
    channels = set(channels)
    if "dense" in channels and index_handle is not None:
        adopt_width()
        allowed_arr = None if allowed is None else np.fromiter(allowed, dtype=np.int64)
        if embedder is None or embedder is index_handle.embedder:
            scores, ids = index_handle.search_texts([query], depth, allowed_arr)  # embedder and index read together
        else:
            scores, ids = index_handle.search(embedder.encode([query]), depth, allowed_arr)
        out["dense"] = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
    # Lexical and entity channels filter after the fact, so they over-fetch when filtered.
    fetch = depth if allowed is None else depth * 10
    if "lexical" in channels:
        out["lexical"] = [(p, s) for p, s in store.lexical_search(query, fetch) if allowed is None or p in allowed][
            :depth
        ]
    if "entity" in channels:
        if entity_ids is None:
            entity_ids = sorted({m.entity_id for m in store.link(query)})
        hits = store.passages_mentioning(list(entity_ids), fetch) if entity_ids else []
        out["entity"] = [(p, s) for p, s in hits if allowed is None or p in allowed][:depth]
    return out


def hybrid_search(
    query: str,
    k: int,
    *,
    store: KnowledgeStore,
    index_handle: IndexHandle | None,
    embedder: TextEmbedder | None = None,
    weights: Any = None,
    entity_ids: Sequence[int] | None = None,
    allowed_ids: Iterable[int] | None = None,
    depth: int | None = None,
) -> list[SearchHit]:
    """The ``k`` best passages for ``query``, fusing the dense, lexical and entity channels.

    ``weights``: a ``RetrievalSettings`` (dense_weight, lexical_weight, entity_weight, rrf_k) or
    a mapping ``{"dense": w, "lexical": w, "entity": w, "rrf_k": n}``; a zero weight skips that
    channel. ``entity_ids``: the query's entities (default: link the query text with the store's
    linker). ``allowed_ids``: restrict results to these passages (source / date filters).
    ``depth``: how many candidates each channel contributes (default max(5k, 50)). Passages
    the index still returns but SQL no longer has are dropped (SQL is the truth). Returns
    SearchHits best first."""
    if k <= 0 or not query.strip():
        return []
    w, rrf_k = _weights(weights)
    depth = depth or max(5 * k, 50)
    active = [c for c in CHANNELS if w.get(c, 0) > 0]
    lists = channel_rankings(
        query,
        depth,
        store=store,
        index_handle=index_handle,
        embedder=embedder,
        entity_ids=entity_ids,
        allowed_ids=allowed_ids,
        channels=active,
    )
    fused = reciprocal_rank_fusion({c: [p for p, _ in lst] for c, lst in lists.items()}, w, rrf_k=rrf_k)
    top = fused[: k * 2]  # a few spare in case some ids vanished from SQL meanwhile
    info = store.passage_info([p for p, _ in top])
    hits: list[SearchHit] = []
    for pid, score in top:
        if pid not in info:
            continue
        p = info[pid]
        hit = SearchHit(
            passage_id=pid,
            score=score,
            text=p.text,
            document_id=p.document_id,
            title=p.title,
            source=p.source,
            published_at=p.published_at,
        )
        for channel, lst in lists.items():
            for rank, (q, s) in enumerate(lst, start=1):
                if q == pid:
                    hit.ranks[channel], hit.channel_scores[channel] = rank, s
                    break
        hits.append(hit)
        if len(hits) == k:
            break
    return hits
