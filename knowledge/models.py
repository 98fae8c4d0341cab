"""The SQL data model (DESIGN.md, "Data model"). SQL is the source of truth; FAISS ids are passage ids."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Alembic needs stable constraint names to alter tables later (SQLite batch mode especially).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere so ids stay int64 (FAISS ids).
IdType = BigInteger().with_variant(Integer(), "sqlite")


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Leave autogenerate's hands off what the models don't declare on purpose: the full-text
    tables and column made by migration 0001, and APScheduler's job table in the same database."""
    if type_ == "table" and name is not None and (name.startswith("passage_fts") or name.startswith("apscheduler")):
        return False
    if (type_ == "column" and name == "tsv") or (type_ == "index" and name == "ix_passage_tsv"):
        return False
    return True


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Source(Base):
    """Where documents and facts come from: a file, a feed, the API."""

    __tablename__ = "source"
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(1000), unique=True)
    kind: Mapped[str] = mapped_column(String(32), default="file")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class Document(Base):
    __tablename__ = "document"
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("source.id"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(500))
    title: Mapped[str | None] = mapped_column(String(1000))
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    text: Mapped[str] = mapped_column(Text)
    published_at: Mapped[dt.date | None] = mapped_column(Date, index=True)
    ingested_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)

    passages: Mapped[list[Passage]] = relationship(back_populates="document", order_by="Passage.ordinal")
    source: Mapped[Source | None] = relationship()


class Passage(Base):
    """A chunk of a document; its id is its FAISS vector id."""

    __tablename__ = "passage"
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("document.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    token_count: Mapped[int] = mapped_column(Integer)

    document: Mapped[Document] = relationship(back_populates="passages")


class PassageVector(Base):
    """A passage's vector as one embedder made it (little-endian float32), written in the passage's
    own transaction by the process that embedded it: the other processes read it instead of
    embedding the text again. Keyed by the embedder's version, so a new embedder never reads the
    vectors of an old one."""

    __tablename__ = "passage_vector"
    passage_id: Mapped[int] = mapped_column(ForeignKey("passage.id", ondelete="CASCADE"), primary_key=True)
    embedder: Mapped[str] = mapped_column(String(200), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Entity(Base):
    __tablename__ = "entity"
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(500), index=True)
    type: Mapped[str | None] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)

    aliases: Mapped[list[Alias]] = relationship(back_populates="entity")


class Alias(Base):
    """A normalised surface form of an entity (the linker's gazetteer)."""

    __tablename__ = "alias"
    __table_args__ = (UniqueConstraint("entity_id", "normalised"),)
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entity.id", ondelete="CASCADE"), index=True)
    surface: Mapped[str] = mapped_column(String(500))
    normalised: Mapped[str] = mapped_column(String(500), index=True)
    prior: Mapped[float] = mapped_column(Float, default=0.5)

    entity: Mapped[Entity] = relationship(back_populates="aliases")


class Relation(Base):
    __tablename__ = "relation"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    label: Mapped[str] = mapped_column(String(500))
    template: Mapped[str | None] = mapped_column(String(1000))
    functional: Mapped[bool] = mapped_column(Boolean, default=False)


class Fact(Base):
    """subject —relation→ object (an entity or a literal), valid over [valid_from, valid_to).

    A new object for a functional relation closes the current fact (sets ``valid_to``) instead of
    deleting it, so "what did we believe on date D?" stays answerable.
    """

    __tablename__ = "fact"
    __table_args__ = (
        Index("ix_fact_subject_relation", "subject_id", "relation_id"),
        Index("ix_fact_object", "object_id"),
        # a relation's objects, counted for answer candidates without reading the fact rows
        Index("ix_fact_relation_object", "relation_id", "object_id"),
    )
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("entity.id", ondelete="CASCADE"))
    relation_id: Mapped[str] = mapped_column(ForeignKey("relation.id"))
    object_id: Mapped[int | None] = mapped_column(ForeignKey("entity.id", ondelete="CASCADE"))
    object_literal: Mapped[str | None] = mapped_column(String(1000))
    valid_from: Mapped[dt.date | None] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date, index=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("source.id"))
    document_id: Mapped[int | None] = mapped_column(ForeignKey("document.id", ondelete="SET NULL"))
    confidence: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    # When the fact was closed: lets a graph view in another process catch up incrementally.
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    # A retracted fact was never true (a wrong record, not a change): it leaves the current and
    # as-of views but stays in the history with why it was withdrawn.
    retracted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    retraction_reason: Mapped[str | None] = mapped_column(String(1000))

    subject: Mapped[Entity] = relationship(foreign_keys=[subject_id])
    object: Mapped[Entity | None] = relationship(foreign_keys=[object_id])
    relation: Mapped[Relation] = relationship()
    source: Mapped[Source | None] = relationship()


class Mention(Base):
    __tablename__ = "mention"
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    passage_id: Mapped[int] = mapped_column(ForeignKey("passage.id", ondelete="CASCADE"), index=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entity.id", ondelete="CASCADE"))
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    surface: Mapped[str] = mapped_column(String(500))


class UpdateRun(Base):
    """One update cycle: stage timings, counts, metrics, the gate's decision and why."""

    __tablename__ = "update_run"
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(50), default="manual")
    status: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    decision: Mapped[str | None] = mapped_column(String(20))
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    checkpoint_version: Mapped[str | None] = mapped_column(String(200))


class Checkpoint(Base):
    __tablename__ = "checkpoint"
    version: Mapped[str] = mapped_column(String(200), primary_key=True)
    parent_version: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="candidate")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    path: Mapped[str | None] = mapped_column(String(2000))


Index("ix_mention_entity_passage", Mention.entity_id, Mention.passage_id)
# The database itself refuses a second active checkpoint: one transaction decides what is active.
Index(
    "uq_checkpoint_one_active",
    Checkpoint.status,
    unique=True,
    sqlite_where=text("status = 'active'"),
    postgresql_where=text("status = 'active'"),
)


class PassageEvent(Base):
    """One passage added or removed, in commit order: what other processes replay above their
    watermark to keep their in-memory index in step. Written by triggers on ``passage``."""

    __tablename__ = "passage_event"
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    passage_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))  # "added" | "removed"
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class IndexGeneration(Base):
    """A published index: files under ``index/<folder>`` (written first, never changed), covering
    every passage event up to ``events_through``. The newest row is the current generation."""

    __tablename__ = "index_generation"
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), unique=True)
    events_through: Mapped[int] = mapped_column(BigInteger)
    vectors: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    embedder: Mapped[str | None] = mapped_column(String(500))
    publisher: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class UpdateLock(Base):
    """A named lock held by one process at a time (one update cycle across all schedulers).

    A row is the lock; its primary key makes a second insert fail on every database. ``expires_at``
    lets a lock left by a crashed process be taken over after its lease runs out.
    """

    __tablename__ = "update_lock"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ScheduledFact(Base):
    """A fact whose ``valid_from`` is still in the future, kept as it was given (entity and relation
    keys) until that day: it must not close the current fact, nor be current, before then. Every
    ingest moves the facts that have come due into :class:`Fact`."""

    __tablename__ = "scheduled_fact"
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    relation: Mapped[str] = mapped_column(String(100))
    object: Mapped[str | None] = mapped_column(String(200))
    object_literal: Mapped[str | None] = mapped_column(String(1000))
    valid_from: Mapped[dt.date] = mapped_column(Date, index=True)
    source: Mapped[str | None] = mapped_column(String(1000))
    confidence: Mapped[float] = mapped_column(Float, default=1.0)
    origin: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
