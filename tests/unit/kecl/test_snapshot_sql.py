"""SQL says which checkpoint is active: a promotion interrupted at any step leaves exactly one
active version, and the ``ACTIVE`` file is a cache that never outvotes SQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from encoder import save_checkpoint, set_active
from kecl import wiring
from kecl.home import open_store
from kecl.settings import Settings
from knowledge import KnowledgeStore, registry
from knowledge.db import make_engine, migrate
from tests.factories import tiny_bundle, tiny_settings
from updater import CycleContext
from updater.cycle import promote


class Crash(BaseException):
    """A simulated kill -9 at one point of the promotion (nothing after it runs)."""


@pytest.fixture()
def home(tmp_path: Path, tiny_embedder_dir: Path) -> tuple[Settings, KnowledgeStore]:
    """A home with v0001 saved and active (SQL row and ACTIVE cache), and v0002 trained from it."""
    settings = tiny_settings(tmp_path / "home", tiny_embedder_dir, model={"device": "cpu"})
    store = open_store(settings)
    v1 = save_checkpoint(tiny_bundle(max_positions=256, seed=1), settings.checkpoints_dir)
    wiring.promote_checkpoint(settings, store, v1)
    yield settings, store
    store.close()


def actives(store: KnowledgeStore) -> list[str]:
    return [c["version"] for c in store.checkpoints() if c["status"] == "active"]


def context(settings: Settings, store: KnowledgeStore) -> CycleContext:
    return CycleContext(
        store=store, checkpoints_dir=settings.checkpoints_dir, load_active=lambda: tiny_bundle(), knowledge=None
    )


def test_killed_after_the_files_are_saved_leaves_the_old_version_active(home) -> None:
    settings, store = home
    save_checkpoint(tiny_bundle(seed=2), settings.checkpoints_dir)  # killed before any row is written
    assert (settings.checkpoints_dir / "v0002").is_dir()
    assert actives(store) == ["v0001"]
    assert wiring.active_checkpoint(settings, store) == "v0001"
    assert wiring.load_encoder(settings, store).version == "v0001"


def test_killed_inside_the_promoting_transaction_leaves_the_old_version_active(home, monkeypatch) -> None:
    settings, store = home
    v2 = save_checkpoint(tiny_bundle(seed=2), settings.checkpoints_dir)
    store.record_checkpoint(v2, "v0001", "candidate", {})
    real = registry.set_checkpoint_status

    def retire_then_die(s, version, status):  # the old row is already retired in the transaction
        registry._retire_active_except(s, version)
        raise Crash()

    monkeypatch.setattr(registry, "set_checkpoint_status", retire_then_die)
    with pytest.raises(Crash):
        promote(context(settings, store), v2)
    monkeypatch.setattr(registry, "set_checkpoint_status", real)
    assert actives(store) == ["v0001"]  # rolled back: never zero, never two
    assert (settings.checkpoints_dir / "ACTIVE").read_text().strip() == "v0001"


def test_killed_after_the_commit_before_the_cache_serves_the_new_version(home, monkeypatch) -> None:
    settings, store = home
    v2 = save_checkpoint(tiny_bundle(seed=2), settings.checkpoints_dir)
    store.record_checkpoint(v2, "v0001", "candidate", {})
    monkeypatch.setattr("updater.cycle.set_active", lambda *a: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        promote(context(settings, store), v2)
    monkeypatch.undo()
    assert (settings.checkpoints_dir / "ACTIVE").read_text().strip() == "v0001"  # the stale cache
    assert actives(store) == [v2]
    assert wiring.active_checkpoint(settings, store) == v2  # SQL wins, and repairs the cache
    assert (settings.checkpoints_dir / "ACTIVE").read_text().strip() == v2
    assert wiring.load_encoder(settings, store).version == v2


def test_a_deleted_or_wrong_active_file_never_outvotes_sql(home) -> None:
    settings, store = home
    v2 = save_checkpoint(tiny_bundle(seed=2), settings.checkpoints_dir)
    store.record_checkpoint(v2, "v0001", "candidate", {})
    (settings.checkpoints_dir / "ACTIVE").unlink()
    assert wiring.load_encoder(settings, store).version == "v0001"  # not the base model
    set_active(settings.checkpoints_dir, v2)  # a cache that disagrees
    assert wiring.active_checkpoint(settings, store) == "v0001"
    assert wiring.load_encoder(settings, store).version == "v0001"


def test_a_full_promotion_switches_the_one_active_row(home) -> None:
    settings, store = home
    v2 = save_checkpoint(tiny_bundle(seed=2), settings.checkpoints_dir)
    store.record_checkpoint(v2, "v0001", "candidate", {})
    promote(context(settings, store), v2)
    assert actives(store) == [v2]
    assert {c["version"]: c["status"] for c in store.checkpoints()}["v0001"] == "retired"


def test_the_database_refuses_a_second_active_row(home) -> None:
    _settings, store = home
    with pytest.raises(IntegrityError), store.session() as s, s.begin():
        s.execute(
            sa.text(
                "INSERT INTO checkpoint (version, status, created_at, metrics) VALUES ('v9', 'active', CURRENT_TIMESTAMP, '{}')"
            )
        )


def test_a_home_from_before_sql_recorded_checkpoints_is_adopted(tmp_path, tiny_embedder_dir) -> None:
    settings = tiny_settings(tmp_path / "old", tiny_embedder_dir)
    store = open_store(settings)
    version = save_checkpoint(tiny_bundle(seed=3), settings.checkpoints_dir)
    set_active(settings.checkpoints_dir, version)  # only the file names it
    assert store.active_checkpoint() is None
    assert wiring.active_checkpoint(settings, store) == version
    assert store.active_checkpoint() == version
    store.close()


def test_the_migration_keeps_one_of_two_active_rows(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0002")
    with engine.begin() as c:
        for v in ("v0001", "v0002"):
            c.execute(
                sa.text(
                    "INSERT INTO checkpoint (version, status, created_at, metrics) VALUES (:v, 'active', CURRENT_TIMESTAMP, '{}')"
                ),
                {"v": v},
            )
    migrate(engine, "head")
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT version, status FROM checkpoint ORDER BY version")).all()
    assert [tuple(r) for r in rows] == [("v0001", "retired"), ("v0002", "active")]
    engine.dispose()
