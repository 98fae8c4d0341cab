"""Request and response bodies of the resource endpoints: listing and deleting documents, ending
and retracting facts, editing entities, relations, models (checkpoints).

Kept apart from :mod:`kecl.api.schemas` (ingest, query, search), whose models these reuse.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from kecl.api.schemas import Page

# ----------------------------------------------------------------------------- documents


class DocumentSummary(BaseModel):
    id: int
    external_id: str | None
    title: str | None
    published_at: dt.date | None
    source: str | None
    passages: int = Field(description="how many passages it was chunked into")


class DocumentPage(Page):
    documents: list[DocumentSummary] = Field(description="by id")


class DocumentDeleted(BaseModel):
    id: int
    passage_ids: list[int] = Field(description="the passages removed from the store, the index and their mentions")


# ----------------------------------------------------------------------------- facts


class FactEnd(BaseModel):
    valid_to: dt.date = Field(description="the first day the fact no longer holds")


class FactRetraction(BaseModel):
    reason: str = Field(min_length=1, max_length=1000, description="why the fact was never true (kept in the history)")


# ----------------------------------------------------------------------------- entities


class EntityCreate(BaseModel):
    id: str = Field(min_length=1, max_length=200, description="your external id for the entity")
    name: str = Field(min_length=1, max_length=500)
    aliases: list[str] = Field(default_factory=list, max_length=100)
    description: str | None = Field(None, max_length=5000)
    type: str | None = Field(None, max_length=200)


class EntityUpdate(BaseModel):
    """Fields to change (absent ones are kept); `aliases` are added to the existing ones."""

    name: str | None = Field(None, min_length=1, max_length=500, description="a new name (the old one stays an alias)")
    description: str | None = Field(None, max_length=5000)
    type: str | None = Field(None, max_length=200)
    aliases: list[str] = Field(default_factory=list, max_length=100, description="aliases to add")

    def changes(self) -> dict[str, Any]:
        """The fields the request sets (name, type, description), by name; a null name changes nothing."""
        fields = self.model_dump(exclude_unset=True, exclude={"aliases"})
        return {k: v for k, v in fields.items() if not (k == "name" and v is None)}


# ----------------------------------------------------------------------------- relations


class Relation(BaseModel):
    id: str = Field(description='the relation id, e.g. "P286"')
    label: str
    template: str | None = Field(description="cloze template with [X] and [Y]")
    functional: bool = Field(description="one object at a time: a new one closes the current fact")


class RelationPage(Page):
    relations: list[Relation] = Field(description="by id")


# ----------------------------------------------------------------------------- models


class Model(BaseModel):
    """A checkpoint of the encoder."""

    version: str
    status: str = Field(description='"active", "candidate", "rejected" or "retired"')
    active: bool
    parent: str | None = Field(description="the checkpoint it was trained from")
    created_at: str | None
    metrics: dict[str, Any]


class ModelPage(Page):
    models: list[Model] = Field(description="oldest first")
