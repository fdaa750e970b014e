"""Per-chunk file counters (status and completion no longer count file rows), download lanes
on files, the indexes batch claims and cross-job de-duplication walk, and the pid namespace of
each worker (a dead worker is recognised by its pid only within the same namespace).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 01:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = ("files_open", "files_done", "files_failed", "files_skipped", "bytes_done",
            "bytes_expected")
BACKFILL = """
UPDATE chunks SET
  files_open = (SELECT count(*) FROM files f WHERE f.chunk_id = chunks.id
                AND f.state IN ('pending', 'downloading')),
  files_done = (SELECT count(*) FROM files f WHERE f.chunk_id = chunks.id AND f.state = 'done'),
  files_failed = (SELECT count(*) FROM files f WHERE f.chunk_id = chunks.id
                  AND f.state = 'failed'),
  files_skipped = (SELECT count(*) FROM files f WHERE f.chunk_id = chunks.id
                   AND f.state = 'skipped'),
  bytes_done = (SELECT coalesce(sum(f.bytes_done), 0) FROM files f WHERE f.chunk_id = chunks.id
                AND f.state = 'done'),
  bytes_expected = (SELECT coalesce(sum(f.size_expected), 0) FROM files f
                    WHERE f.chunk_id = chunks.id AND f.state != 'skipped')
"""


def upgrade() -> None:
    with op.batch_alter_table("chunks") as batch:
        for name in COUNTERS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=False,
                                       server_default="0"))
    op.execute(BACKFILL)
    with op.batch_alter_table("chunks") as batch:
        for name in COUNTERS:
            batch.alter_column(name, server_default=None)
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("lane", sa.String(length=160), nullable=True))
        batch.create_index(batch.f("ix_files_job_id_host_state_chunk_id_id"),
                           ["job_id", "host", "state", "chunk_id", "id"], unique=False)
        batch.create_index(batch.f("ix_files_job_id_state"), ["job_id", "state"], unique=False)
        batch.create_index(batch.f("ix_files_file_key"), ["file_key"], unique=False)
    with op.batch_alter_table("stored_files") as batch:
        batch.create_index(batch.f("ix_stored_files_path"), ["path"], unique=False)
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("pid_space", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("pid_space")
    with op.batch_alter_table("stored_files") as batch:
        batch.drop_index(batch.f("ix_stored_files_path"))
    with op.batch_alter_table("files") as batch:
        batch.drop_index(batch.f("ix_files_file_key"))
        batch.drop_index(batch.f("ix_files_job_id_state"))
        batch.drop_index(batch.f("ix_files_job_id_host_state_chunk_id_id"))
        batch.drop_column("lane")
    with op.batch_alter_table("chunks") as batch:
        for name in reversed(COUNTERS):
            batch.drop_column(name)
