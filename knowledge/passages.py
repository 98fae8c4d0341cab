"""Reads of the text side: passages, documents and mentions, full-text search and sampling.

Each function reads through the caller's session; SQL dialect differences (FTS5 on SQLite,
``tsvector`` on PostgreSQL, random seeds) are decided from the session's engine.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select, text
from sqlalchemy.orm import Session

from knowledge.db import select_rows
from knowledge.models import Document, Mention, Passage, PassageVector, Source
from knowledge.views import PassageInfo

_STOPWORDS = frozenset(
    "a an and are as at be by for from has have he her his in is it its of on or she that the their "
    "this to was were which who will with mask".split()
)


def passage_count(s: Session) -> int:
    """The number of passages."""
    return s.scalar(select(func.count()).select_from(Passage)) or 0


def max_passage_id(s: Session) -> int:
    """The highest passage id, 0 for no passages."""
    return s.scalar(select(func.max(Passage.id))) or 0


def passage_ids(s: Session) -> set[int]:
    """Every passage id."""
    return set(s.scalars(select(Passage.id)))


def passage_texts(s: Session, ids: Sequence[int]) -> dict[int, str]:
    """Text by passage id for those of ``ids`` that exist (unknown ids are left out)."""
    return dict(select_rows(s, select(Passage.id, Passage.text), Passage.id, list(ids)))


def passage_vectors(s: Session, embedder: str, ids: Sequence[int]) -> dict[int, bytes]:
    """The stored vectors ``embedder`` made, by passage id, for those of ``ids`` that have one."""
    q = select(PassageVector.passage_id, PassageVector.vector).where(PassageVector.embedder == embedder)
    return dict(select_rows(s, q, PassageVector.passage_id, list(ids)))


def passages_after(s: Session, after_id: int, limit: int) -> list[tuple[int, str]]:
    """Up to ``limit`` ``(passage id, text)`` pairs with an id above ``after_id``, in id order."""
    rows = s.execute(select(Passage.id, Passage.text).where(Passage.id > after_id).order_by(Passage.id).limit(limit))
    return [(passage_id, text) for passage_id, text in rows]


def passage_info(s: Session, ids: Sequence[int]) -> dict[int, PassageInfo]:
    """Each passage of ``ids`` with its document's title, source, date and external id (unknown ids left out)."""
    rows = select_rows(
        s,
        select(
            Passage.id,
            Passage.document_id,
            Passage.text,
            Document.title,
            Source.name,
            Document.published_at,
            Document.external_id,
        )
        .join(Document, Passage.document_id == Document.id)
        .outerjoin(Source, Document.source_id == Source.id),
        Passage.id,
        list(ids),
    )
    return {r[0]: PassageInfo(*r) for r in rows}


def passage_ids_where(
    s: Session, source: str | None = None, published_from: dt.date | None = None, published_to: dt.date | None = None
) -> set[int]:
    """Passage ids matching a source name and/or publication date range (for index filters)."""
    q = select(Passage.id).join(Document, Passage.document_id == Document.id)
    if source is not None:
        q = q.join(Source, Document.source_id == Source.id).where(Source.name == source)
    if published_from is not None:
        q = q.where(Document.published_at >= published_from)
    if published_to is not None:
        q = q.where(Document.published_at <= published_to)
    return set(s.scalars(q))


def lexical_search(s: Session, query: str, k: int = 10) -> list[tuple[int, float]]:
    """Full-text search with the database's own engine: ``(passage id, score)``, best first.

    Higher score = better. SQLite: FTS5 with BM25; PostgreSQL: ``tsvector`` with ``ts_rank_cd``.
    Query words are OR-ed (any word may match; rarer words weigh more); on PostgreSQL a word in
    more than :data:`COMMON_FRACTION` of the passages only ranks the passages the rarer words
    found. A query of stopwords only, or ``k`` ≤ 0, finds nothing. Raises NotImplementedError on
    any other database.
    """
    words = [w for w in dict.fromkeys(re.findall(r"\w+", query.lower())) if w not in _STOPWORDS]
    if not words or k <= 0:
        return []
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        rows = s.execute(
            text(
                "SELECT rowid, bm25(passage_fts) AS r FROM passage_fts WHERE passage_fts MATCH :q ORDER BY r LIMIT :k"
            ),
            {"q": match, "k": k},
        ).all()
        return [(int(pid), -float(score)) for pid, score in rows]
    if dialect == "postgresql":
        rank = " | ".join(words)
        selects = _postgres_selecting(s, words)
        found: Sequence[Any] = []
        for select_by in selects:
            found = s.execute(
                text(
                    "SELECT id, ts_rank_cd(tsv, q) AS r FROM passage, to_tsquery('english', :q) q, "
                    "to_tsquery('english', :sel) sel WHERE tsv @@ sel ORDER BY r DESC, id LIMIT :k"
                ),
                {"q": rank, "sel": select_by, "k": k},
            ).all()
            if found:
                break
        return [(int(pid), float(score)) for pid, score in found]
    raise NotImplementedError(f"full-text search is not implemented for {dialect}")


COMMON_FRACTION = 0.01
"""On PostgreSQL, a query word found in more than this fraction of passages only ranks: it does not
select passages (Elasticsearch's "common terms" split). ``ts_rank_cd`` is computed for every
selected passage, so one common word would make a search rank a large part of the corpus (a word in
a fifth of 100k passages: ~70 ms), while such a word says little about which passages are relevant."""
_COMMON_TTL = 300.0
_common: dict[str, tuple[float, dict[str, float]]] = {}


def _postgres_selecting(s: Session, words: list[str]) -> list[str]:
    """The ``tsquery`` texts that select the passages to rank, to try in turn until one selects any:
    the rare words OR-ed; with only common words, all of them AND-ed, then OR-ed. Which words are
    common comes from the planner's statistics of ``passage.tsv`` (kept by ``ANALYZE`` and
    autovacuum); without statistics every word selects."""
    every = " | ".join(words)
    frequency = _common_lexemes(s)
    if not frequency:
        return [every]
    rows = s.execute(
        text("SELECT w, tsvector_to_array(to_tsvector('english', w)) FROM unnest(CAST(:w AS text[])) AS w"),
        {"w": words},
    ).all()
    lexemes = {w: list(lx or []) for w, lx in rows}
    words = [w for w in words if lexemes.get(w)]  # the dictionary's stopwords neither select nor rank
    rare = [w for w in words if all(frequency.get(lx, 0.0) <= COMMON_FRACTION for lx in lexemes[w])]
    if rare:
        return [" | ".join(rare)]
    return [" & ".join(words), every] if len(words) > 1 else [every]


def _common_lexemes(s: Session) -> dict[str, float]:
    """``{lexeme: fraction of passages holding it}`` for the lexemes PostgreSQL's statistics track
    as most common in ``passage.tsv`` (empty before the table is analysed); kept per database for
    a few minutes, as the statistics themselves change only on ``ANALYZE``."""
    bind = s.get_bind()
    key = str((bind.engine if isinstance(bind, Connection) else bind).url)
    now = time.monotonic()
    cached = _common.get(key)
    if cached is not None and now - cached[0] < _COMMON_TTL:
        return cached[1]
    row = s.execute(
        text(
            "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = 'passage' AND attname = 'tsv'"
        )
    ).first()
    frequency = dict(zip(row[0], row[1])) if row is not None and row[0] is not None else {}
    _common[key] = (now, frequency)
    return frequency


def passages_mentioning(s: Session, entity_ids: Sequence[int], k: int = 10) -> list[tuple[int, float]]:
    """``(passage id, distinct entities mentioned)`` of the passages that mention any of
    ``entity_ids``, most distinct entities first, at most ``k``; none for no ids or ``k`` ≤ 0.
    """
    ids = sorted(set(entity_ids))
    if not ids or k <= 0:
        return []
    # One IN list, not chunked: the ids are the entities linked in one query (a handful), and the
    # count and limit need every id in the same GROUP BY.
    n = func.count(func.distinct(Mention.entity_id)).label("n")
    rows = s.execute(
        select(Mention.passage_id, n)
        .where(Mention.entity_id.in_(ids))
        .group_by(Mention.passage_id)
        .order_by(n.desc(), Mention.passage_id)
        .limit(k)
    ).all()
    return [(int(pid), float(c)) for pid, c in rows]


def mentions(s: Session, entity_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """The first ``limit`` mentions of an entity as dicts with ``passage_id``, ``start``, ``end``,
    ``surface`` and ``document_id``, in the order they were linked."""
    rows = s.execute(
        select(Mention.passage_id, Mention.start, Mention.end, Mention.surface, Passage.document_id)
        .join(Passage, Mention.passage_id == Passage.id)
        .where(Mention.entity_id == entity_id)
        .order_by(Mention.id)
        .limit(limit)
    ).all()
    return [dict(passage_id=p, start=a, end=b, surface=sf, document_id=d) for p, a, b, sf, d in rows]


def passage_mentions(s: Session, passage_ids: Sequence[int]) -> dict[int, list[tuple[int, int, int]]]:
    """``(start, end, entity_id)`` of the mentions in each passage, by start (for salient-span masking).

    Passages without mentions are left out.
    """
    out: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    rows = select_rows(
        s,
        select(Mention.passage_id, Mention.start, Mention.end, Mention.entity_id).order_by(Mention.start),
        Mention.passage_id,
        list(passage_ids),
    )
    for pid, a, b, eid in rows:
        out[pid].append((a, b, eid))
    return dict(out)


def get_document(s: Session, document_id: int) -> dict[str, Any] | None:
    """A document as a dict with its text, metadata and passages; None for an unknown id."""
    d = s.get(Document, document_id)
    if d is None:
        return None
    return {
        "id": d.id,
        "external_id": d.external_id,
        "title": d.title,
        "text": d.text,
        "published_at": d.published_at.isoformat() if d.published_at else None,
        "source": d.source.name if d.source else None,
        "content_hash": d.content_hash,
        "passages": [{"id": p.id, "ordinal": p.ordinal, "text": p.text} for p in d.passages],
    }


def _document_filters(
    source: str | None, published_from: dt.date | None, published_to: dt.date | None
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if source is not None:
        where.append(Document.source_id.in_(select(Source.id).where(Source.name == source)))
    if published_from is not None:
        where.append(Document.published_at >= published_from)
    if published_to is not None:
        where.append(Document.published_at <= published_to)
    return where


def documents(
    s: Session,
    limit: int = 50,
    offset: int = 0,
    source: str | None = None,
    published_from: dt.date | None = None,
    published_to: dt.date | None = None,
) -> list[dict[str, Any]]:
    """A page of documents by id (optionally from one source, published in a date range), as dicts
    with metadata and their passage count (no text)."""
    n = select(func.count()).select_from(Passage).where(Passage.document_id == Document.id).scalar_subquery()
    rows = s.execute(
        select(Document.id, Document.external_id, Document.title, Document.published_at, Source.name, n)
        .outerjoin(Source, Document.source_id == Source.id)
        .where(*_document_filters(source, published_from, published_to))
        .order_by(Document.id)
        .offset(offset)
        .limit(limit)
    ).all()
    return [
        {
            "id": i,
            "external_id": e,
            "title": t,
            "published_at": p.isoformat() if p else None,
            "source": src,
            "passages": c,
        }
        for i, e, t, p, src, c in rows
    ]


def count_documents(
    s: Session, source: str | None = None, published_from: dt.date | None = None, published_to: dt.date | None = None
) -> int:
    """How many documents :func:`documents` would list with these filters and no page limit."""
    where = _document_filters(source, published_from, published_to)
    return s.scalar(select(func.count()).select_from(Document).where(*where)) or 0


def sample_passages(
    s: Session, n: int, max_id: int | None = None, exclude_modulo: int | None = None, seed: int | None = None
) -> list[tuple[int, str]]:
    """Up to ``n`` random ``(passage id, text)`` with id ≤ ``max_id`` (replay for continual training).

    ``exclude_modulo=m`` leaves out ids divisible by m (kept aside as a held-out set). ``seed``
    makes the sample repeatable on PostgreSQL; SQLite's ``random()`` cannot be seeded.
    """
    q = select(Passage.id, Passage.text)
    if max_id is not None:
        q = q.where(Passage.id <= max_id)
    if exclude_modulo:
        q = q.where(Passage.id % exclude_modulo != 0)
    if seed is not None and s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT setseed(:x)"), {"x": (seed % 1000) / 1000})
    rows = s.execute(q.order_by(func.random()).limit(n)).all()
    return [(int(i), t) for i, t in rows]


def heldout_passages(s: Session, n: int, modulo: int, max_id: int | None = None) -> list[tuple[int, str]]:
    """The first ``n`` ``(passage id, text)`` whose id is divisible by ``modulo`` (> 0): a fixed held-out set."""
    q = select(Passage.id, Passage.text).where(Passage.id % modulo == 0)
    if max_id is not None:
        q = q.where(Passage.id <= max_id)
    return [(int(i), t) for i, t in s.execute(q.order_by(Passage.id).limit(n)).all()]
