"""Shared fixtures: stores on a real SQLite file and on the real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PG_ADMIN_URL = os.environ.get("KECL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_available() -> str | None:
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "no server"
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema on the test server (dropped afterwards).

    Skips when no server answers, except under ``KECL_REQUIRE_POSTGRES=1`` (CI), where a missing
    server fails the run instead of silently skipping the PostgreSQL half of the suite.
    """
    problem = _postgres_available()
    if problem:
        if os.environ.get("KECL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required (KECL_REQUIRE_POSTGRES=1) but unavailable: {problem}")
        pytest.skip(f"PostgreSQL unavailable: {problem}")
    yield PG_ADMIN_URL


@pytest.fixture()
def pg_schema_url(postgres_url: str) -> Iterator[str]:
    import sqlalchemy as sa

    schema = f"kecl_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """The same store tests run against a SQLite file and a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kecl.db'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture()
def store(db_url: str):  # type: ignore[no-untyped-def]
    from knowledge import KnowledgeStore

    s = KnowledgeStore.open(db_url)
    yield s
    s.close()
