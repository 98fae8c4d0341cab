"""scheduled facts: facts whose valid_from is in the future wait here until their day

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduled_fact",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("relation", sa.String(length=100), nullable=False),
        sa.Column("object", sa.String(length=200), nullable=True),
        sa.Column("object_literal", sa.String(length=1000), nullable=True),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("source", sa.String(length=1000), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("origin", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_fact")),
    )
    with op.batch_alter_table("scheduled_fact", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scheduled_fact_valid_from"), ["valid_from"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("scheduled_fact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scheduled_fact_valid_from"))
    op.drop_table("scheduled_fact")
