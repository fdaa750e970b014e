"""Follow-mode state on jobs: JSOC's newest data at the last check, the re-check mark, and
when JSOC was last asked.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("jsoc_until", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("settled_until", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("last_check_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("last_check_at")
        batch.drop_column("settled_until")
        batch.drop_column("jsoc_until")
