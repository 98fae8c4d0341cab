"""The database: engine, Alembic migrations, sessions, and chunked ``IN (...)`` statements.

Every statement that restricts a column to a caller-sized list goes through :func:`where_in` (or
the three helpers built on it), so no query can exceed SQLite's bound-parameter limit.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

from sqlalchemy import Delete, Engine, Row, Select, Update, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"

# Well under SQLite's bound-parameter limit (999 before 3.32), leaving room for the statement's
# other parameters; PostgreSQL's limit (65535) is far above it.
SQLITE_VARS = 900

Statement = TypeVar("Statement", Select[*tuple[Any, ...]], Delete, Update)
Dml = TypeVar("Dml", Delete, Update)
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def utcnow() -> dt.datetime:
    """The current UTC time without tzinfo: the columns are naive ``DateTime`` in UTC."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def make_engine(url: str, echo: bool = False) -> Engine:
    """A SQLAlchemy engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout.

    The API and the scheduler share one SQLite file, hence WAL (readers never block the writer)
    and a 30 s timeout rather than failing on a locked database. Raises
    :class:`sqlalchemy.exc.ArgumentError` for a URL SQLAlchemy cannot parse.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic, so users keep their store across upgrades.

    Returns nothing; raises :class:`alembic.util.CommandError` for an unknown revision. A store
    already at the newest revision is recognised without loading Alembic (a second of every
    command's start-up).
    """
    if revision == "head" and _current_revision(engine) == _head_revision():
        return
    # deferred: Alembic loads only when the schema may need upgrading
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def _head_revision() -> str | None:
    """The one revision no migration names as its ``down_revision``; None if that is not exactly one."""
    revisions, downs = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revisions |= set(re.findall(r'^revision(?::[^=]*)?= *"([^"]+)"', source, re.MULTILINE))
        downs |= set(re.findall(r'^down_revision(?::[^=]*)?= *"([^"]+)"', source, re.MULTILINE))
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 else None


def _current_revision(engine: Engine) -> str | None:
    """The store's Alembic revision; None for a new or unversioned database."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except SQLAlchemyError:
        return None
    return rows[0] if len(rows) == 1 else None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions on ``engine`` whose objects stay readable after commit (results outlive sessions)."""
    return sessionmaker(engine, expire_on_commit=False)


def where_in(stmt: Statement, column: Any, values: Sequence[Any]) -> Iterator[Statement]:
    """``stmt`` restricted to ``column IN (chunk)``, once per chunk of at most ``SQLITE_VARS`` values.

    The one chunking mechanism: selects, deletes and updates alike. Yields nothing for no values
    (an empty ``IN`` matches no row either). Values are taken as given: callers that need each
    row once across chunks pass distinct values.
    """
    for i in range(0, len(values), SQLITE_VARS):
        yield stmt.where(column.in_(values[i : i + SQLITE_VARS]))


def select_rows(s: Session, stmt: Select[*Ts], column: Any, values: Sequence[Any]) -> list[Row[*Ts]]:
    """The rows of ``stmt`` where ``column`` is in ``values``, chunk after chunk (see :func:`where_in`)."""
    return [row for q in where_in(stmt, column, values) for row in s.execute(q)]


def select_scalars(s: Session, stmt: Select[T, *Ts], column: Any, values: Sequence[Any]) -> list[T]:
    """The first column (or ORM object) of :func:`select_rows`' rows."""
    return [x for q in where_in(stmt, column, values) for x in s.scalars(q)]


def execute_in(s: Session, stmt: Dml, column: Any, values: Sequence[Any]) -> None:
    """Run a DELETE or UPDATE on the rows where ``column`` is in ``values``, chunk after chunk."""
    for q in where_in(stmt, column, values):
        s.execute(q)
