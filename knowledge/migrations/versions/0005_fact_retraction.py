"""fact retraction: a withdrawn fact keeps its row, the time and the reason

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fact") as batch:
        batch.add_column(sa.Column("retracted_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("retraction_reason", sa.String(length=1000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fact") as batch:
        batch.drop_column("retraction_reason")
        batch.drop_column("retracted_at")
