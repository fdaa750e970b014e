"""Per-chunk file counters: how many files of a chunk are open, done, failed or skipped, and
their bytes, kept in the same transactions that change file states.

Completion checks and job status read these counters instead of counting file rows, so they
cost the same for a job of ten files or ten million. The hot path (a file finishing, failing,
being retried) applies deltas; rare operations (an export listing its files, a chunk failing,
a job cancelled or retried) recount the chunks they touched, which is bounded by a chunk's size.
The tar row of a url-tar export is not a file of the job and is never counted (its members are).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Chunk, File
from service.db.tar_rows import NOT_TAR_ROW
from service.states import FILE_OPEN, FileState

BUCKETS = {FileState.PENDING: "files_open", FileState.DOWNLOADING: "files_open",
           FileState.DONE: "files_done", FileState.FAILED: "files_failed",
           FileState.SKIPPED: "files_skipped"}
COUNTERS = ("files_open", "files_done", "files_failed", "files_skipped", "bytes_done",
            "bytes_expected")


class ChunkDeltas:
    """Counter changes per chunk, collected during a transaction and applied once."""

    def __init__(self) -> None:
        self.by_chunk: dict[int, Counter[str]] = {}

    def move(self, chunk_id: int, old: FileState, new: FileState, nbytes: int = 0) -> None:
        """A file of the chunk went from state ``old`` to ``new`` (``nbytes`` when done)."""
        delta = self.by_chunk.setdefault(chunk_id, Counter())
        delta[BUCKETS[old]] -= 1
        delta[BUCKETS[new]] += 1
        if new == FileState.DONE:
            delta["bytes_done"] += nbytes

    async def apply(self, s: AsyncSession) -> list[int]:
        """Write the deltas (chunks in id order, so concurrent writers lock alike); returns the
        chunks whose open count went down (they may be complete now)."""
        closing = []
        for chunk_id in sorted(self.by_chunk):
            delta = {k: v for k, v in self.by_chunk[chunk_id].items() if v}
            if not delta:
                continue
            values = {name: getattr(Chunk, name) + value for name, value in delta.items()}
            await s.execute(update(Chunk).where(Chunk.id == chunk_id).values(values)
                            .execution_options(synchronize_session=False))
            if delta.get("files_open", 0) < 0:
                closing.append(chunk_id)
        self.by_chunk.clear()
        return closing


async def recount_chunks(s: AsyncSession, chunk_ids: Iterable[int]) -> None:
    """Set the counters of these chunks from their file rows (bounded by the chunks' size)."""
    for chunk_id in sorted(set(chunk_ids)):
        row = (await s.execute(select(
            func.count().filter(File.state.in_(FILE_OPEN)),
            func.count().filter(File.state == FileState.DONE),
            func.count().filter(File.state == FileState.FAILED),
            func.count().filter(File.state == FileState.SKIPPED),
            func.coalesce(func.sum(case((File.state == FileState.DONE, File.bytes_done),
                                        else_=0)), 0),
            func.coalesce(func.sum(case((File.state != FileState.SKIPPED, File.size_expected),
                                        else_=0)), 0),
        ).where(File.chunk_id == chunk_id, NOT_TAR_ROW))).one()
        await s.execute(update(Chunk).where(Chunk.id == chunk_id)
                        .values(dict(zip(COUNTERS, map(int, row), strict=True)))
                        .execution_options(synchronize_session=False))
