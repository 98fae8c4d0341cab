"""The cross-process lease lock: one ``update_lock`` row per lock name.

The same on every database: the primary key rejects a second holder, and a lease carries its
expiry so that a crashed holder's lock is taken over once it runs out. Each function works inside
the caller's session and transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, select, update
from sqlalchemy.orm import Session

from knowledge.db import utcnow
from knowledge.models import UpdateLock

log = logging.getLogger(__name__)


def holder_is_gone(holder: str) -> bool:
    """Whether ``holder`` (``host:pid:…``, as :func:`updater.default_holder` writes it) is a process
    of this host that no longer exists. A holder on another host, or in another form, is never
    judged gone here: only its lease's expiry frees it."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, under another user
    return False


def acquire(s: Session, name: str, holder: str, lease_seconds: float) -> None:
    """Clear an expired lease on ``name`` (or one whose holder's process on this host is gone),
    then take it for ``holder`` for ``lease_seconds``.

    Raises :class:`sqlalchemy.exc.IntegrityError` while another live holder has it; the caller
    rolls back, so an expired lease is only cleared together with a successful take-over.
    """
    now = utcnow()
    s.execute(delete(UpdateLock).where(UpdateLock.name == name, UpdateLock.expires_at < now))
    previous = s.scalar(select(UpdateLock.holder).where(UpdateLock.name == name))
    if previous is not None and holder_is_gone(previous):
        # a killed holder on this host cannot renew: waiting for its lease to run out only blocks cycles
        log.warning("lock %r: its holder %s is no longer running; taking it over", name, previous)
        s.execute(delete(UpdateLock).where(UpdateLock.name == name, UpdateLock.holder == previous))
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
