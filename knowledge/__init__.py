"""The symbolic knowledge store: SQL (SQLAlchemy) with a networkx graph view and an entity linker.

Knows no torch. Public names: the store and its result views, its readers' records, the linker,
the graph view, the engine and migration entry points, and the token count used for chunking.
"""

from knowledge.browse import DocumentHit, EntityPage, TimelineEntry
from knowledge.candidates import Candidate, fitting_relations
from knowledge.chunking import approximate_token_count, chunk_text
from knowledge.db import make_engine, migrate
from knowledge.edits import EditError
from knowledge.graph import FactGraph, GraphFact, verbalise
from knowledge.ingest import PassageVectors
from knowledge.lease import holder_is_gone
from knowledge.linker import EntityLinker, LinkedMention, normalise_alias
from knowledge.readers import (
    DocumentRecord,
    EntityRecord,
    FactRecord,
    IngestIssue,
    ReadBatch,
    RelationRecord,
    iter_input_files,
    read_paths,
)
from knowledge.snapshots import GenerationView, PassageEventView
from knowledge.store import ChunkEmbedder, KnowledgeStore
from knowledge.views import EntityView, FactView, IngestSummary, PassageInfo
from knowledge.watermark import Watermark

__all__ = [
    "KnowledgeStore",
    "Candidate",
    "fitting_relations",
    "GenerationView",
    "PassageEventView",
    "PassageVectors",
    "ChunkEmbedder",
    "EditError",
    "IngestSummary",
    "IngestIssue",
    "FactView",
    "EntityView",
    "PassageInfo",
    "Watermark",
    "EntityPage",
    "TimelineEntry",
    "DocumentHit",
    "DocumentRecord",
    "EntityRecord",
    "RelationRecord",
    "FactRecord",
    "ReadBatch",
    "read_paths",
    "iter_input_files",
    "chunk_text",
    "approximate_token_count",
    "EntityLinker",
    "LinkedMention",
    "normalise_alias",
    "FactGraph",
    "GraphFact",
    "verbalise",
    "make_engine",
    "migrate",
    "holder_is_gone",
]
