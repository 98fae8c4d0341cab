"""Bulk ingest into the knowledge store: facts/s and passages/s on SQLite and PostgreSQL.

Side by side in the same run: kecl's batched Core path against the one-ORM-object-at-a-time
path a user would write first (``session.add`` per fact, one commit), on the same data. The
baseline maps its own ORM classes onto the tables as the database has them (reflected), so it
needs none of the knowledge package's private models.

    .venv/bin/python -m benchmarks.bench_ingest            # 100k facts, 10k documents
    .venv/bin/python -m benchmarks.bench_ingest --quick    # 10k facts, 1k documents
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, registry, relationship

from knowledge import DocumentRecord, EntityRecord, FactRecord, KnowledgeStore, RelationRecord

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def make_data(n_facts: int, n_docs: int, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    n_entities = max(100, n_facts // 5)
    relations = [
        RelationRecord(f"R{i}", f"relation {i}", f"[X] relation {i} [Y] .", functional=i % 2 == 0) for i in range(50)
    ]
    names = [f"Entity{i} {rng.choice(['Alpha', 'Beta', 'Gamma', 'Delta'])}" for i in range(n_entities)]
    entities = [EntityRecord(f"e{i}", names[i], aliases=[f"E-{i}"]) for i in range(n_entities)]
    facts, seen = [], set()
    while len(facts) < n_facts:
        s, r, o = rng.randrange(n_entities), rng.randrange(50), rng.randrange(n_entities)
        if (s, r) in seen:
            continue  # distinct (subject, relation): the timing is about inserts; supersession is tested
        seen.add((s, r))
        facts.append(FactRecord(f"e{s}", f"R{r}", object=f"e{o}"))
    docs = [
        DocumentRecord(
            text=" ".join(
                f"{names[rng.randrange(n_entities)]} met {names[rng.randrange(n_entities)]} in year {rng.randrange(1900, 2024)}."
                for _ in range(rng.randint(2, 6))
            ),
            title=f"doc {i}",
            source="bench",
        )
        for i in range(n_docs)
    ]
    return relations, entities, facts, docs


def bench_store(url: str, data, label: str) -> dict:  # type: ignore[no-untyped-def]
    relations, entities, facts, docs = data
    store = KnowledgeStore.open(url)
    store.upsert_relations(relations)
    t = time.perf_counter()
    store.upsert_entities(entities)
    t_entities = time.perf_counter() - t
    t = time.perf_counter()
    store.add_facts(facts)
    t_facts = time.perf_counter() - t
    t = time.perf_counter()
    pids = store.add_documents(docs)
    t_docs = time.perf_counter() - t
    stats = store.stats()
    store.close()
    assert stats["facts_current"] == len(facts), stats
    return {
        "backend": label,
        "entities_per_s": len(entities) / t_entities,
        "facts_per_s": len(facts) / t_facts,
        "passages_per_s": len(pids) / t_docs,
        "docs_per_s": len(docs) / t_docs,
        "passages": len(pids),
        "mentions": stats["mentions"],
        "facts_s": t_facts,
        "docs_s": t_docs,
    }


class Row:
    """A row as a plain ORM object (the baseline's own classes derive from it)."""

    def __init__(self, **columns: object) -> None:
        for name, value in columns.items():
            setattr(self, name, value)


def naive_orm(engine: sa.Engine) -> type[Row]:
    """A hand-written ORM mapping of the ``fact`` table and what it refers to, onto the tables the
    database holds; returns the fact class (new classes per call: one mapping per engine)."""
    tables = sa.MetaData()
    tables.reflect(engine, only=["fact", "entity", "relation", "source"])
    orm = registry()
    entity, relation, source, fact = (type(name, (Row,), {}) for name in ("Entity", "Relation", "Source", "Fact"))
    for cls, table in ((entity, "entity"), (relation, "relation"), (source, "source")):
        orm.map_imperatively(cls, tables.tables[table])
    t = tables.tables["fact"]
    orm.map_imperatively(
        fact,
        t,
        properties={
            "subject": relationship(entity, foreign_keys=[t.c.subject_id]),
            "object": relationship(entity, foreign_keys=[t.c.object_id]),
            "relation": relationship(relation),
            "source": relationship(source),
        },
    )
    return fact


def bench_naive_orm(url: str, data) -> float:  # type: ignore[no-untyped-def]
    """Baseline: the same facts as ORM objects, one ``session.add`` each, one commit.

    The ORM classes are the user's own, mapped onto the tables as the database has them (reflected:
    the schema the store migrated to), with the relationships the store's own model declares; the
    values that model fills in on the Python side (``confidence``, ``created_at``) are given here.
    """
    relations, entities, facts, _ = data
    store = KnowledgeStore.open(url)
    store.upsert_relations(relations)
    store.upsert_entities(entities)
    with store.session() as s:
        ids = dict(s.execute(sa.text("select external_id, id from entity")).all())
    Fact = naive_orm(store.engine)
    t = time.perf_counter()
    with Session(store.engine) as s:
        for f in facts:
            s.add(
                Fact(
                    subject_id=ids[f.subject],
                    relation_id=f.relation,
                    object_id=ids[f.object],
                    confidence=1.0,
                    created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
                )
            )
            s.flush()  # what per-record code with an id needed afterwards does
        s.commit()
    elapsed = time.perf_counter() - t
    store.close()
    return len(facts) / elapsed


def pg_schema_url() -> tuple[str, str] | None:
    try:
        engine = sa.create_engine(PG_URL)
        schema = f"kecl_bench_{uuid.uuid4().hex[:8]}"
        with engine.begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
        return f"{PG_URL}?options=-csearch_path%3D{schema}", schema
    except Exception as exc:  # noqa: BLE001
        print(f"PostgreSQL unavailable, skipped: {exc}")
        return None


def drop_schema(schema: str) -> None:
    engine = sa.create_engine(PG_URL)
    with engine.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--facts", type=int, default=100_000)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench-out/ingest.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.facts, args.docs = 10_000, 1_000
    data = make_data(args.facts, args.docs)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(bench_store(f"sqlite:///{tmp}/bench.db", data, "sqlite"))
        results[-1]["naive_orm_facts_per_s"] = bench_naive_orm(f"sqlite:///{tmp}/naive.db", data)
    pg = pg_schema_url()
    if pg:
        try:
            results.append(bench_store(pg[0], data, "postgresql"))
        finally:
            drop_schema(pg[1])
        pg2 = pg_schema_url()
        try:
            results[-1]["naive_orm_facts_per_s"] = bench_naive_orm(pg2[0], data)
        finally:
            drop_schema(pg2[1])
    print(f"\nbulk ingest: {args.facts:,} facts, {args.docs:,} documents")
    print(
        f"{'backend':<11}{'facts/s':>10}{'naive ORM':>11}{'ratio':>7}{'entities/s':>12}{'passages/s':>12}{'docs/s':>9}"
    )
    for r in results:
        print(
            f"{r['backend']:<11}{r['facts_per_s']:>10,.0f}{r['naive_orm_facts_per_s']:>11,.0f}"
            f"{r['facts_per_s'] / r['naive_orm_facts_per_s']:>7.1f}{r['entities_per_s']:>12,.0f}"
            f"{r['passages_per_s']:>12,.0f}{r['docs_per_s']:>9,.0f}"
        )
    out = {"facts": args.facts, "docs": args.docs, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
