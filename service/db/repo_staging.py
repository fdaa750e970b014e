"""Staging observations: how long each staged export took from request to ready.

An export that JSOC staged (``url``, ``url-tar``; not a quick export answered at once) leaves
one ``staging_observations`` row when it becomes ready, written in the same transaction as its
files (``record_export_ready``): method, protocol, records, JSOC's size estimate and the
seconds from sending the request (``submitted_at``) to the status-0 reply of the poll that
found it ready — what the service waited, JSOC's queue and the polling interval included, its
own listing of the files not. Only the newest ``KEEP_OBSERVATIONS`` are kept.
``stages.staging_estimate`` turns them into the staging cost ``method: auto`` weighs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Export, StagingObservation
from service.db.repo_base import RepoBase
from service.db.tar_rows import is_tar_key

KEEP_OBSERVATIONS = 200
MB = 1 << 20


@dataclass(frozen=True)
class StagingSample:
    """One staged export: its method, protocol, records, size (bytes, JSOC's estimate; None
    when JSOC gave none) and seconds from request to ready."""

    method: str
    protocol: str | None
    records: int
    size_bytes: int | None
    seconds: float


def staged_sample(export: Export, rows: Sequence[Mapping[str, Any]],
                  index: Mapping[str, Any] | None, ready_at: datetime) -> StagingSample | None:
    """The observation of an export seen ready at ``ready_at``; None when it did not stage
    (a quick export is ready from ``reserving``) or lists no record."""
    if export.state not in ("submitted", "polling") or export.submitted_at is None:
        return None
    records = len({r["record"] for r in rows if not is_tar_key(str(r.get("file_key") or ""))})
    if records == 0:
        return None
    seconds = (ready_at - export.submitted_at).total_seconds()
    return StagingSample(export.method or "url", export.protocol, records,
                         _size_bytes(index), max(seconds, 0.0))


def _size_bytes(index: Mapping[str, Any] | None) -> int | None:
    """JSOC's ``size`` (MB, a string in index.json) in bytes; None when absent or unreadable."""
    try:
        size = float((index or {}).get("size"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(size * MB) if size >= 0 else None


async def keep_sample(s: AsyncSession, sample: StagingSample, at: datetime) -> None:
    """Insert an observation and drop those older than the newest KEEP_OBSERVATIONS."""
    s.add(StagingObservation(method=sample.method, protocol=sample.protocol,
                             records=sample.records, size_bytes=sample.size_bytes,
                             seconds=sample.seconds, observed_at=at))
    await s.flush()
    newest = await s.scalar(select(func.max(StagingObservation.id)))
    if newest is not None and newest > KEEP_OBSERVATIONS:
        await s.execute(delete(StagingObservation)
                        .where(StagingObservation.id <= newest - KEEP_OBSERVATIONS)
                        .execution_options(synchronize_session=False))


class StagingMixin(RepoBase):
    """Reading and adding staging observations."""

    async def staging_samples(self, limit: int = KEEP_OBSERVATIONS) -> list[StagingSample]:
        """The newest ``limit`` observations, newest first."""
        async def tx(s: AsyncSession) -> list[StagingSample]:
            rows = (await s.execute(select(StagingObservation)
                                    .order_by(StagingObservation.id.desc())
                                    .limit(limit))).scalars().all()
            return [StagingSample(r.method, r.protocol, int(r.records), r.size_bytes,
                                  float(r.seconds)) for r in rows]
        return await self._run(tx, read_only=True)

    async def add_staging_sample(self, sample: StagingSample, *,
                                 now: datetime | None = None) -> None:
        """Record an observation made elsewhere (e.g. carried over from another database)."""
        if sample.records < 1 or sample.seconds < 0:
            raise ValueError(f"a staging observation needs records >= 1 and seconds >= 0, got "
                             f"{sample.records} records in {sample.seconds} s")

        async def tx(s: AsyncSession) -> None:
            await keep_sample(s, sample, self.now(now))
        await self._run(tx)
