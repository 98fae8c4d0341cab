"""The symbolic knowledge store: SQL (SQLAlchemy) with a networkx graph view and an entity linker.

Knows no torch. Public names: the store, its readers' records, the linker and the graph view.
"""

from knowledge.chunking import chunk_text
from knowledge.graph import FactGraph, GraphFact, verbalise
from knowledge.linker import EntityLinker, LinkedMention, normalise_alias
from knowledge.readers import (
    DocumentRecord,
    EntityRecord,
    FactRecord,
    IngestIssue,
    ReadBatch,
    RelationRecord,
    read_paths,
)
from knowledge.store import EntityView, FactView, IngestSummary, KnowledgeStore, PassageInfo, make_engine, migrate

__all__ = [
    "KnowledgeStore",
    "IngestSummary",
    "IngestIssue",
    "FactView",
    "EntityView",
    "PassageInfo",
    "DocumentRecord",
    "EntityRecord",
    "RelationRecord",
    "FactRecord",
    "ReadBatch",
    "read_paths",
    "chunk_text",
    "EntityLinker",
    "LinkedMention",
    "normalise_alias",
    "FactGraph",
    "GraphFact",
    "verbalise",
    "make_engine",
    "migrate",
]
