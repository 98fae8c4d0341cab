"""The store's typed results: ingest summaries and the fact, entity and passage views.

Their fields and ``to_dict`` shapes are what the CLI, the HTTP API and the query pipeline show.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from knowledge.graph import verbalise
from knowledge.readers import IngestIssue


@dataclass
class IngestSummary:
    """What one ingest did: counts of what went in, what was already there, and what was skipped."""

    files: int = 0
    documents_added: int = 0
    documents_unchanged: int = 0
    passages_added: int = 0
    mentions_added: int = 0
    entities_added: int = 0
    entities_updated: int = 0
    relations_added: int = 0
    relations_updated: int = 0
    facts_added: int = 0
    facts_closed: int = 0
    facts_unchanged: int = 0
    facts_scheduled: int = 0  # dated in the future: kept until their day
    new_passage_ids: list[int] = field(default_factory=list)
    # (passage id, embedder version, vector bytes) stored with the new passages of one write: the
    # process that wrote them indexes these without reading them back from SQL. ``merge`` leaves
    # them out, so the total of a bulk ingest does not hold every vector it wrote in memory.
    stored_vectors: list[tuple[int, str, bytes]] = field(default_factory=list, repr=False)
    new_fact_ids: list[int] = field(default_factory=list)
    closed_fact_ids: list[int] = field(default_factory=list)
    issues: list[IngestIssue] = field(default_factory=list)

    def merge(self, other: IngestSummary) -> None:
        """Add ``other``'s counts and concatenate its id and issue lists onto this summary, in place
        (not its ``stored_vectors``)."""
        for name, value in vars(other).items():
            if name != "stored_vectors":
                setattr(self, name, getattr(self, name) + value)

    def counts(self) -> dict[str, int]:
        """The integer counters by field name (the id and issue lists left out)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


@dataclass(frozen=True)
class FactView:
    """A fact with its names resolved, as the CLI, API and query pipeline show it."""

    id: int
    subject_id: int
    subject_key: str
    subject: str
    relation_id: str
    relation: str
    template: str | None
    object_id: int | None
    object_key: str | None
    object: str
    valid_from: dt.date | None
    valid_to: dt.date | None
    source: str | None
    document_id: int | None
    confidence: float
    retraction_reason: str | None = None  # set on a retracted fact (history only)

    @property
    def is_current(self) -> bool:
        """True while the fact is neither closed (no ``valid_to``) nor retracted."""
        return self.valid_to is None and self.retraction_reason is None

    def verbalise(self) -> str:
        """The fact as a sentence through its relation's cloze template."""
        template = self.template or f"[X] {self.relation} [Y] ."
        return verbalise(template, self.subject, self.object)

    def to_dict(self) -> dict[str, Any]:
        """Every field, dates as ISO strings (or None), plus ``text``: the verbalised fact."""
        d = dict(vars(self))
        d["valid_from"] = self.valid_from.isoformat() if self.valid_from else None
        d["valid_to"] = self.valid_to.isoformat() if self.valid_to else None
        d["text"] = self.verbalise()
        return d


@dataclass(frozen=True)
class EntityView:
    """An entity with its aliases, facts, history and how often the corpus mentions it."""

    id: int
    key: str
    name: str
    type: str | None
    description: str | None
    aliases: list[str]
    facts: list[FactView]  # current facts where the entity is subject or object
    history: list[FactView]  # closed facts, newest first
    mention_count: int
    facts_total: int = 0  # current facts, of which ``facts`` may hold only the first
    history_total: int = 0  # closed facts, of which ``history`` may hold only the newest

    def to_dict(self) -> dict[str, Any]:
        """Every field, with ``facts`` and ``history`` as lists of :meth:`FactView.to_dict`."""
        d = dict(vars(self))
        d["facts"] = [f.to_dict() for f in self.facts]
        d["history"] = [f.to_dict() for f in self.history]
        return d


@dataclass(frozen=True)
class PassageInfo:
    """A passage with its document's title, source and date (for showing retrieval hits)."""

    id: int
    document_id: int
    text: str
    title: str | None
    source: str | None
    published_at: dt.date | None
    document_key: str | None = None
