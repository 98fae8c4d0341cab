"""Shared fixtures: stores on a real SQLite file and on the real PostgreSQL server, the packaged
tokenizer. Tests under ``tests/unit`` are marked ``unit`` and those under ``tests/integration``
``integration`` (``pytest -m unit`` runs the fast tier alone)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TESTS = Path(__file__).parent
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by its tier (the folder it lives in)."""
    for item in items:
        tier = Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if tier in ("unit", "integration"):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def tokenizer():  # type: ignore[no-untyped-def]
    """The packaged model's fast tokenizer (shared; tokenizers hold no per-test state)."""
    from tests.factories import packaged_tokenizer

    return packaged_tokenizer()


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random sentence encoder on disk, for homes whose index must not load the real one."""
    from tests.factories import save_tiny_sentence_encoder

    return save_tiny_sentence_encoder(tmp_path_factory.mktemp("tiny-sentence-encoder"))
