"""snapshots in SQL: the passage event log, published index generations, one active checkpoint

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Triggers, not application code, write the event log: every path that inserts or deletes a
# passage (HTTP, CLI ingest, an update cycle, a cascade from a deleted document) is covered.
SQLITE_TRIGGERS = [
    """CREATE TRIGGER passage_event_added AFTER INSERT ON passage
       BEGIN INSERT INTO passage_event (passage_id, kind, created_at)
             VALUES (NEW.id, 'added', strftime('%Y-%m-%d %H:%M:%f', 'now')); END""",
    """CREATE TRIGGER passage_event_removed AFTER DELETE ON passage
       BEGIN INSERT INTO passage_event (passage_id, kind, created_at)
             VALUES (OLD.id, 'removed', strftime('%Y-%m-%d %H:%M:%f', 'now')); END""",
]
PG_TRIGGERS = [
    """CREATE FUNCTION kecl_passage_event() RETURNS trigger AS $$
       BEGIN
         IF TG_OP = 'INSERT' THEN
           INSERT INTO passage_event (passage_id, kind, created_at)
             VALUES (NEW.id, 'added', timezone('utc', clock_timestamp()));
         ELSE
           INSERT INTO passage_event (passage_id, kind, created_at)
             VALUES (OLD.id, 'removed', timezone('utc', clock_timestamp()));
         END IF;
         RETURN NULL;
       END $$ LANGUAGE plpgsql""",
    # One notification per statement; PostgreSQL delivers it at commit and folds duplicates.
    """CREATE FUNCTION kecl_passage_notify() RETURNS trigger AS $$
       BEGIN PERFORM pg_notify('kecl_passage_events', ''); RETURN NULL; END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER passage_event_row AFTER INSERT OR DELETE ON passage
       FOR EACH ROW EXECUTE FUNCTION kecl_passage_event()""",
    """CREATE TRIGGER passage_event_notify AFTER INSERT OR DELETE ON passage
       FOR EACH STATEMENT EXECUTE FUNCTION kecl_passage_notify()""",
]


def upgrade() -> None:
    op.create_table(
        "passage_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("passage_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_passage_event")),
    )
    op.create_table(
        "index_generation",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("folder", sa.String(length=500), nullable=False),
        sa.Column("events_through", sa.BigInteger(), nullable=False),
        sa.Column("vectors", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("embedder", sa.String(length=500), nullable=True),
        sa.Column("publisher", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_index_generation")),
        sa.UniqueConstraint("folder", name=op.f("uq_index_generation_folder")),
    )
    # A store from before this revision may hold two active rows (a promotion interrupted between
    # its steps): keep the newest, so the unique index below can hold from now on.
    op.execute(
        """UPDATE checkpoint SET status = 'retired' WHERE status = 'active' AND version <>
           (SELECT MAX(version) FROM checkpoint WHERE status = 'active')"""
    )
    op.create_index(
        "uq_checkpoint_one_active",
        "checkpoint",
        ["status"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_TRIGGERS, "postgresql": PG_TRIGGERS}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS passage_event_added")
        op.execute("DROP TRIGGER IF EXISTS passage_event_removed")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS passage_event_row ON passage")
        op.execute("DROP TRIGGER IF EXISTS passage_event_notify ON passage")
        op.execute("DROP FUNCTION IF EXISTS kecl_passage_event()")
        op.execute("DROP FUNCTION IF EXISTS kecl_passage_notify()")
    op.drop_index("uq_checkpoint_one_active", table_name="checkpoint")
    op.drop_table("index_generation")
    op.drop_table("passage_event")
