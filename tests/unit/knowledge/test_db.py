"""The migration fast path: a store at the newest revision is recognised without Alembic, and
the newest revision found by reading the migration files is Alembic's own head."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from knowledge import KnowledgeStore
from knowledge.db import MIGRATIONS, _current_revision, _head_revision, make_engine, migrate


def test_head_from_the_files_is_alembics_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert _head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_a_new_store_is_migrated_and_then_recognised(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine, "0001")
    assert _current_revision(engine) == "0001"
    migrate(engine)  # not at head: Alembic upgrades
    assert _current_revision(engine) == _head_revision()
    engine.dispose()
    KnowledgeStore.open(db_url).close()  # at head: the fast path, no error
