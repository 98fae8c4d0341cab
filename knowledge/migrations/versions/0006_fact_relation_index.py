"""fact by relation: answer candidates count a relation's objects from an index range

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_fact_relation_object", "fact", ["relation_id", "object_id"])


def downgrade() -> None:
    op.drop_index("ix_fact_relation_object", table_name="fact")
