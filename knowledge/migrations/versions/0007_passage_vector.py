"""passage vectors: following processes read the vector the receiving process made

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "passage_vector",
        sa.Column("passage_id", IdType, nullable=False),
        sa.Column("embedder", sa.String(length=200), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["passage_id"], ["passage.id"], name="fk_passage_vector_passage_id_passage", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("passage_id", "embedder", name="pk_passage_vector"),
    )


def downgrade() -> None:
    op.drop_table("passage_vector")
