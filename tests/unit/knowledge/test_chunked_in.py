"""Id lists longer than one ``IN (...)`` chunk: every store method that takes or builds one gives
the same answer across chunk boundaries, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from knowledge import DocumentRecord, EntityRecord, FactRecord, KnowledgeStore, RelationRecord
from knowledge.db import SQLITE_VARS, where_in
from knowledge.models import Passage

N = 2 * SQLITE_VARS + 7  # three chunks, the last one short


def test_where_in_yields_one_statement_per_chunk() -> None:
    stmts = list(where_in(sa.select(Passage.id), Passage.id, list(range(N))))
    sizes = [len(v) for q in stmts for v in q.compile().params.values()]
    assert sizes == [SQLITE_VARS, SQLITE_VARS, 7]
    assert list(where_in(sa.delete(Passage), Passage.id, [])) == []


def test_entities_and_facts_across_chunks(store: KnowledgeStore) -> None:
    store.upsert_relations([RelationRecord("F", "f", "[X] f [Y] .", True)])
    added = store.upsert_entities([EntityRecord(f"e{i}", f"Entity {i}", aliases=[f"Alias {i}"]) for i in range(N)])
    assert added.entities_added == N
    renamed = store.upsert_entities([EntityRecord(f"e{i}", f"Renamed {i}") for i in range(N)])
    assert (renamed.entities_added, renamed.entities_updated) == (0, N)
    assert store.stats()["aliases"] == 3 * N

    records = [FactRecord(f"e{i}", "F", object=f"e{(i + 1) % N}") for i in range(N)]
    first = store.add_facts(records)
    assert first.facts_added == N and not first.issues
    again = store.add_facts(records)
    assert (again.facts_added, again.facts_unchanged) == (0, N)

    ids = sorted(first.new_fact_ids)
    shuffled = ids[::-1] + ids[:5]  # any order, repeats
    assert [f.id for f in store.facts(ids=shuffled, limit=None)] == ids
    offset = SQLITE_VARS - 10  # a page that straddles the first chunk boundary
    page = store.facts(ids=shuffled, limit=50, offset=offset)
    assert [f.id for f in page] == ids[offset : offset + 50]
    assert page == store.facts(limit=50, offset=offset)  # the same page without an id list


def test_passages_across_chunks(store: KnowledgeStore) -> None:
    store.upsert_entities([EntityRecord(f"e{i}", f"Entity {i}") for i in range(N)])
    docs = [DocumentRecord(text=f"Entity {i} is here.") for i in range(N)]
    pids = store.add_documents(docs)
    assert len(pids) == N
    assert store.add_documents(docs) == []  # every content hash found again
    assert set(store.passage_texts(pids)) == set(pids)
    assert set(store.passage_info(pids)) == set(pids)
    mentions = store.passage_mentions(pids)
    assert len(mentions) == N
    assert store.relink_passages(pids) == store.stats()["mentions"] == sum(map(len, mentions.values()))
    assert store.passage_mentions(pids) == mentions

    # One document of more passages than a chunk holds: deletion takes them all.
    small = KnowledgeStore(store.engine, max_passage_tokens=8)
    long_pids = small.add_documents([DocumentRecord(text=" ".join(f"Entity {i} waits here." for i in range(N)))])
    assert len(long_pids) > SQLITE_VARS
    document_id = store.passage_info([long_pids[0]])[long_pids[0]].document_id
    assert sorted(store.delete_document(document_id)) == sorted(long_pids)
    assert store.passage_texts(long_pids) == {} and store.passage_mentions(long_pids) == {}
    assert store.passage_ids() == set(pids)
