"""The cross-process lease lock: one ``update_lock`` row per lock name.

The same on every database: the primary key rejects a second holder, and a lease carries its
expiry so that a crashed holder's lock is taken over once it runs out. Each function works inside
the caller's session and transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, update
from sqlalchemy.orm import Session

from knowledge.db import utcnow
from knowledge.models import UpdateLock


def acquire(s: Session, name: str, holder: str, lease_seconds: float) -> None:
    """Clear an expired lease on ``name``, then take it for ``holder`` for ``lease_seconds``.

    Raises :class:`sqlalchemy.exc.IntegrityError` while another live holder has it; the caller
    rolls back, so an expired lease is only cleared together with a successful take-over.
    """
    now = utcnow()
    s.execute(delete(UpdateLock).where(UpdateLock.name == name, UpdateLock.expires_at < now))
    s.execute(
        insert(UpdateLock).values(
            name=name, holder=holder, acquired_at=now, expires_at=now + dt.timedelta(seconds=lease_seconds)
        )
    )


def renew(s: Session, name: str, holder: str, lease_seconds: float) -> bool:
    """Extend ``holder``'s lease on ``name`` to ``lease_seconds`` from now; False if it does not hold it
    (it never did, or the lease expired and was taken over)."""
    # Session.execute is annotated Result for every statement; an UPDATE without RETURNING gives a CursorResult
    result = cast(
        CursorResult[Any],
        s.execute(
            update(UpdateLock)
            .where(UpdateLock.name == name, UpdateLock.holder == holder)
            .values(expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
        ),
    )
    n = result.rowcount
    return bool(n)


def release(s: Session, name: str, holder: str) -> None:
    """Give up ``holder``'s lease on ``name``; nothing happens if someone else holds it."""
    s.execute(delete(UpdateLock).where(UpdateLock.name == name, UpdateLock.holder == holder))


def current_holder(s: Session, name: str) -> str | None:
    """Who holds ``name`` now; None if nobody, or if the lease has expired."""
    row = s.get(UpdateLock, name)
    return row.holder if row is not None and row.expires_at >= utcnow() else None
