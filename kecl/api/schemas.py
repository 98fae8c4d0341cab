"""Request and response bodies of the HTTP API.

Response models mirror what the store, the query pipeline and search return (``FactView.to_dict``,
``EntityView.to_dict``, ``KnowledgeStore.get_document`` / ``stats`` / ``runs``, ``Answer.to_dict``,
``SearchHit.to_dict``, ``Kecl.snapshot``) field for field and in the same order, so the JSON a client
gets is what those produce; ``tests/integration/test_api_schemas.py`` holds them to it. A field that is
sometimes absent (never null) is typed ``X | SkipJsonSchema[None]`` and its route drops unset fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from kecl.pipeline import QueryOptions
from knowledge import DocumentRecord, EntityRecord, FactRecord, ReadBatch, RelationRecord

# ----------------------------------------------------------------------------- request bodies


class DocumentIn(BaseModel):
    text: str = Field(min_length=1, pattern=r"\S", description="the document's text (not only whitespace)")
    title: str | None = Field(None, max_length=1000)
    id: str | None = Field(None, max_length=500, description="your id for the document")
    published_at: dt.date | None = None
    source: str | None = Field(None, max_length=1000, description='where it came from (default "api")')

    def record(self) -> DocumentRecord:
        return DocumentRecord(
            text=self.text,
            title=self.title,
            external_id=self.id,
            published_at=self.published_at,
            source=self.source or "api",
        )


class DocumentsIn(BaseModel):
    """Documents to ingest; the whole body is bounded by `api.max_body_bytes`."""

    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)


class EntityIn(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=500)
    aliases: list[str] = Field(default_factory=list, max_length=100)
    description: str | None = None
    type: str | None = None


class RelationIn(BaseModel):
    id: str = Field(min_length=1, max_length=100)
    label: str = Field(min_length=1, max_length=500)
    template: str | None = Field(None, description="cloze template with [X] and [Y]")
    functional: bool = False


class FactIn(BaseModel):
    subject: str = Field(min_length=1)
    relation: str = Field(min_length=1)
    object: str | None = Field(None, description="entity id (give exactly one of `object` and `object_literal`)")
    object_literal: str | None = Field(None, description="a value, when the object is not an entity")
    valid_from: dt.date | None = None
    source: str | None = Field(None, description='where it came from (default "api")')
    confidence: float = Field(1.0, ge=0.0, le=1.0)


class FactsIn(BaseModel):
    """Relations, entities and facts to ingest, written in that order; the whole body is bounded by
    `api.max_body_bytes`."""

    relations: list[RelationIn] = Field(default_factory=list, max_length=1000)
    entities: list[EntityIn] = Field(default_factory=list, max_length=10000)
    facts: list[FactIn] = Field(default_factory=list, max_length=10000)

    def batch(self) -> ReadBatch:
        """The records to ingest; each one's origin (``facts[2]``) names it in reported issues."""
        return ReadBatch(
            relations=[
                RelationRecord(
                    id=r.id, label=r.label, template=r.template, functional=r.functional, origin=f"relations[{i}]"
                )
                for i, r in enumerate(self.relations)
            ],
            entities=[
                EntityRecord(
                    id=e.id,
                    name=e.name,
                    aliases=list(e.aliases),
                    description=e.description,
                    type=e.type,
                    origin=f"entities[{i}]",
                )
                for i, e in enumerate(self.entities)
            ],
            facts=[
                FactRecord(
                    subject=f.subject,
                    relation=f.relation,
                    object=f.object,
                    object_literal=f.object_literal,
                    valid_from=f.valid_from,
                    source=f.source or "api",
                    confidence=f.confidence,
                    origin=f"facts[{i}]",
                )
                for i, f in enumerate(self.facts)
            ],
        )


class QueryIn(BaseModel):
    text: str = Field(
        min_length=1,
        description="a cloze query with one or more [MASK] (required; any case); at most `api.max_text_chars` "
        "characters",
    )
    mode: Literal["closed-book", "concat", "tree"] = "concat"
    k: int = Field(4, ge=0, description="evidence passages to inject; at most `api.max_k`")
    hops: int = Field(1, ge=1, le=3, description="graph hops for facts")
    as_of: dt.date | None = Field(None, description="use the facts believed on this date")
    top_k: int = Field(5, ge=1, description="predictions per [MASK]; at most `api.max_k`")
    explain: bool = Field(False, description="attention rollout over the evidence")
    evidence_boost: float | None = Field(
        None,
        ge=0.0,
        le=50.0,
        description="logit bonus for evidence words not in "
        "the query (augmented modes); null: the server's model.evidence_boost",
    )

    def options(self) -> QueryOptions:
        return QueryOptions(
            mode=self.mode,
            k_passages=self.k,
            hops=self.hops,
            as_of=self.as_of,
            top_k=self.top_k,
            explain=self.explain,
            evidence_boost=self.evidence_boost,
        )


class SearchIn(BaseModel):
    text: str = Field(min_length=1, description="the query; at most `api.max_text_chars` characters")
    k: int = Field(5, ge=1, description="hits to return; at most `api.max_k`")
    source: str | None = Field(None, description="only passages of documents from this source")
    published_from: dt.date | None = Field(None, description="only documents published on or after this date")
    published_to: dt.date | None = Field(None, description="only documents published on or before this date")


# ----------------------------------------------------------------------------- ops


class Health(BaseModel):
    status: Literal["ok"]
    passages: int = Field(description="passages in the store")
    index_loaded: bool = Field(description="whether the passage index is loaded (it is once the server has started)")


class Readiness(BaseModel):
    """Whether this process serves the current knowledge state (``GET /readyz``)."""

    ready: bool = Field(description="every check below passed")
    store_writable: bool = Field(description="a write transaction on the database succeeded")
    index_loaded: bool
    index_vectors: int | None = Field(description="vectors in this process's index (None before it is loaded)")
    sql_passages: int = Field(description="passages in the store")
    passages_behind: int | None = Field(description="how many passages the index trails SQL by")
    active_checkpoint: str | None = Field(description="the checkpoint SQL records as active")
    serving_checkpoint: str | None = Field(description="the checkpoint this process answers with")
    checkpoint_loaded: bool = Field(description="the process answers with SQL's active checkpoint")
    event_watermark: int = Field(description="the passage event this process's index is complete through")
    snapshot_lag_seconds: float = Field(description="age of the oldest passage event not yet applied (0: none)")
    publisher: bool = Field(description="this process holds the index publisher's lease")
    problems: list[str] = Field(description="why not ready (empty when ready)")


class StoreCounts(BaseModel):
    """Row counts of the store's tables (facts split into current and closed)."""

    sources: int
    documents: int
    passages: int
    entities: int
    aliases: int
    relations: int
    facts_current: int
    facts_closed: int
    mentions: int
    update_runs: int
    checkpoints: int


class IndexSize(BaseModel):
    kind: str = Field(description='"flat", "hnsw" or "ivfpq"')
    vectors: int


class Stats(BaseModel):
    store: StoreCounts
    index: IndexSize | SkipJsonSchema[None] = Field(None, description="absent until the index is loaded")


# ----------------------------------------------------------------------------- entities and facts


class Fact(BaseModel):
    """A fact with its names resolved."""

    id: int
    subject_id: int
    subject_key: str = Field(description="the subject's external id")
    subject: str = Field(description="the subject's name")
    relation_id: str
    relation: str = Field(description="the relation's label")
    template: str | None = Field(description="the relation's cloze template")
    object_id: int | None = Field(description="null for a literal object")
    object_key: str | None
    object: str = Field(description="the object entity's name, or the literal")
    valid_from: dt.date | None
    valid_to: dt.date | None = Field(description="null while the fact is current")
    source: str | None
    document_id: int | None
    confidence: float
    retraction_reason: str | None = Field(description="why the fact was retracted (history only); null otherwise")
    text: str = Field(description="the fact as a sentence (through the relation's template)")


class Page(BaseModel):
    """One page of a list: every list endpoint takes `limit` and `offset` and says the `total`."""

    total: int = Field(description="how many items match, over all pages")
    limit: int
    offset: int


class FactList(Page):
    facts: list[Fact]


class EntitySummary(BaseModel):
    id: int
    key: str = Field(description="the external id")
    name: str
    type: str | None


class EntityList(Page):
    entities: list[EntitySummary] = Field(description="exact matches first, then prefix matches")


class Entity(BaseModel):
    id: int
    key: str = Field(description="the external id")
    name: str
    type: str | None
    description: str | None
    aliases: list[str]
    facts: list[Fact] = Field(description="current facts with the entity as subject or object, in id order")
    history: list[Fact] = Field(description="closed facts, newest first")
    mention_count: int = Field(description="mentions linked in passages")
    facts_total: int = Field(description="current facts in all (`facts` holds at most `limit`)")
    history_total: int = Field(description="closed facts in all (`history` holds at most `limit`)")


class Neighbourhood(BaseModel):
    entity_id: int
    hops: int
    facts: list[Fact] = Field(description="closest first")


class FactsAdded(BaseModel):
    """What the ingest did; skipped records are listed in ``issues``."""

    entities_added: int
    entities_updated: int
    relations_added: int
    relations_updated: int
    facts_added: int
    facts_closed: int = Field(description="current facts that a new value of a functional relation closed")
    facts_unchanged: int
    new_fact_ids: list[int]
    issues: list[str] = Field(description="one line per skipped record, naming it (`facts[1]: …`)")


# ----------------------------------------------------------------------------- documents


class Passage(BaseModel):
    id: int
    ordinal: int = Field(description="position in the document, from 0")
    text: str


class Document(BaseModel):
    id: int
    external_id: str | None
    title: str | None
    text: str
    published_at: dt.date | None
    source: str | None
    content_hash: str
    passages: list[Passage]


class DocumentsAdded(BaseModel):
    documents_added: int
    documents_unchanged: int = Field(description="documents already stored with the same content")
    passage_ids: list[int] = Field(description="the new passages, searchable now")
    mentions_added: int


# ----------------------------------------------------------------------------- search and query


class SearchHit(BaseModel):
    """A passage found by hybrid search."""

    passage_id: int
    score: float = Field(description="fused reciprocal-rank score")
    ranks: dict[str, int] = Field(description="1-based rank in each channel that found it (dense, lexical, entity)")
    channel_scores: dict[str, float] = Field(description="raw score in each channel that found it")
    text: str
    document_id: int | None
    title: str | None
    source: str | None
    published_at: dt.date | None


class SearchResults(BaseModel):
    hits: list[SearchHit] = Field(description="best first")


class TokenScore(BaseModel):
    token: str
    score: float = Field(description="probability")


class EntityAnswer(BaseModel):
    """A whole answer for the query's [MASK]: a name, however many word-pieces it has."""

    text: str = Field(description="the surface form (an entity's name or alias, or a decoded string)")
    entity_id: int | None = Field(description="the entity it names; null for a freely decoded string")
    score: float = Field(description="length-normalised log-likelihood, plus the evidence prior")
    source: Literal["fact", "passage", "type", "alias", "decoded"] = Field(
        description="where the candidate came from: the linked entities' facts, the injected passages, "
        "the entities of a fitting type, another surface of one of those, or free decoding"
    )


class UsedFact(Fact):
    relevance: float = Field(description="how well the relation matches the query's wording (1–2)")


class TokenWeight(BaseModel):
    token: str
    weight: float


class EvidenceSegment(BaseModel):
    """One input segment (the query, a fact or a passage) with its share of the attention."""

    segment: int
    text: str
    weight: float
    top_tokens: list[TokenWeight]


class Watermark(BaseModel):
    passage: int = Field(description="the highest passage id in the store")
    fact: int = Field(description="the highest fact id in the store")
    event: int | None = Field(
        None, description="the passage event this process has applied up to (None before it follows the log)"
    )


class IndexSnapshot(BaseModel):
    kind: str
    embedder: str | None
    vectors: int
    generation: int = Field(description="bumped by every re-embedding swap")


class Snapshot(BaseModel):
    """The state that answered."""

    checkpoint: str | None = Field(description="the encoder's checkpoint version (or base model name)")
    watermark: Watermark
    index: IndexSnapshot | SkipJsonSchema[None] = Field(None, description="absent until the index is loaded")


class Timings(BaseModel):
    retrieve: float = Field(description="milliseconds linking and retrieving")
    predict: float = Field(description="milliseconds of the (batched) forward pass")
    entities: float = Field(0.0, description="milliseconds scoring entity-level answers (batched)")
    batch_size: int = Field(description="queries that shared the forward pass")


class Answer(BaseModel):
    text: str = Field(description="the query, [MASK] normalised")
    mode: Literal["closed-book", "concat", "tree"]
    predictions: list[list[TokenScore]] = Field(description="per [MASK], best first")
    entities: list[EntityAnswer] = Field(
        description="entity-level answers for the one [MASK], best first (empty for several masks)"
    )
    facts: list[UsedFact] = Field(description="the facts injected")
    evidence: list[SearchHit] = Field(description="the passages injected")
    injected_input: str = Field(description="the encoder's input as text")
    explanation: list[EvidenceSegment] | None = Field(description="with `explain`: attention per input segment")
    snapshot: Snapshot
    timings_ms: Timings


# ----------------------------------------------------------------------------- update runs


class Run(BaseModel):
    """One update cycle."""

    id: int
    trigger: str = Field(description='what started it: "api", "cli", "schedule", …')
    status: str = Field(description='"running", "succeeded" or "failed"')
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    timings: dict[str, float] = Field(description="seconds per stage")
    counts: dict[str, Any]
    metrics: dict[str, Any] = Field(description="evaluation of the active and candidate models")
    decision: str | None = Field(description='"promote", "reject" or "no-op"')
    reasons: list[str]
    error: str | None
    checkpoint_version: str | None = Field(description="the candidate checkpoint")


class RunList(Page):
    runs: list[Run] = Field(description="newest first")


class RunStarted(BaseModel):
    run_id: int = Field(description="the new cycle's id")
    status: Literal["running"]
    poll: str = Field(description="where to follow it: `/v1/runs/{run_id}`")
