"""Edits of single records after ingest: end a fact, retract one, rename an entity or give it aliases.

Each function works inside the caller's session and transaction and raises :class:`EditError`
(with what to fix) for a request the store cannot honour, writing nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from knowledge.db import utcnow
from knowledge.linker import normalise_alias
from knowledge.models import Alias, Entity, Fact


class EditError(ValueError):
    """An edit that cannot be made; ``status`` is 404 for a missing record, 409 for a conflicting state."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def _fact(s: Session, fact_id: int) -> Fact:
    fact = s.get(Fact, fact_id)
    if fact is None:
        raise EditError(f"no fact {fact_id}", status=404)
    if fact.retracted_at is not None:
        raise EditError(f"fact {fact_id} was retracted ({fact.retraction_reason})")
    return fact


def end_fact(s: Session, fact_id: int, valid_to: dt.date) -> None:
    """Close a current fact at ``valid_to`` (it stays in the history and in as-of views before it).

    Raises EditError: 404 for an unknown fact, 409 if it is already closed or retracted or
    ``valid_to`` is before its ``valid_from``.
    """
    fact = _fact(s, fact_id)
    if fact.valid_to is not None:
        raise EditError(f"fact {fact_id} already ended on {fact.valid_to.isoformat()}")
    if fact.valid_from is not None and valid_to < fact.valid_from:
        raise EditError(
            f"valid_to {valid_to.isoformat()} is before the fact's valid_from {fact.valid_from.isoformat()}"
        )
    fact.valid_to = valid_to
    fact.closed_at = utcnow()  # graph views in every process drop it from this watermark
    s.flush()


def retract_fact(s: Session, fact_id: int, reason: str) -> None:
    """Withdraw a fact that was never true: gone from current and as-of views, kept in the history
    with ``reason``. Raises EditError: 404 for an unknown fact, 409 if it was retracted already."""
    fact = _fact(s, fact_id)
    now = utcnow()
    fact.retracted_at = now
    fact.retraction_reason = reason
    fact.closed_at = now  # graph views in every process drop it
    s.flush()


def create_entity(
    s: Session, key: str, name: str, type: str | None, description: str | None, aliases: list[str]
) -> int:
    """A new entity with its name and aliases in the gazetteer; returns its id.

    Raises EditError (409) when an entity already has external id ``key``.
    """
    if s.scalar(select(Entity.id).where(Entity.external_id == key)) is not None:
        raise EditError(f"an entity with id {key!r} exists already (update it instead)")
    entity = Entity(external_id=key, name=name, type=type, description=description)
    s.add(entity)
    s.flush()
    _add_aliases(s, entity.id, [(name, 1.0)] + [(a, 0.5) for a in aliases])
    return entity.id


def update_entity(s: Session, entity_id: int, changes: dict[str, Any], aliases: list[str]) -> None:
    """Change an entity's ``name``/``type``/``description`` (keys of ``changes``) and add ``aliases``.

    A new name becomes an alias too; old names and aliases are kept, so earlier mentions still link.
    Raises EditError (404) for an unknown entity.
    """
    entity = s.get(Entity, entity_id)
    if entity is None:
        raise EditError(f"no entity {entity_id}", status=404)
    for field in ("name", "type", "description"):
        if field in changes:
            setattr(entity, field, changes[field])
    entity.updated_at = utcnow()
    new = [(changes["name"], 1.0)] if "name" in changes else []
    _add_aliases(s, entity_id, new + [(a, 0.5) for a in aliases])
    s.flush()


def _add_aliases(s: Session, entity_id: int, surfaces: list[tuple[str, float]]) -> None:
    have = set(s.scalars(select(Alias.normalised).where(Alias.entity_id == entity_id)))
    for surface, prior in surfaces:
        norm = normalise_alias(surface)
        if norm and norm not in have:
            have.add(norm)
            s.add(Alias(entity_id=entity_id, surface=surface, normalised=norm, prior=prior))
    s.flush()
