"""Read-only views for the dashboard: a job's exports with their chunks' progress, and the
politeness figures (pending exports per notify email, active download connections per host).

Every query is bounded by what is open or by one page: exports come with the per-chunk file
counters (``service/db/counters.py``), never with a count of file rows; pending exports and
active connections are counted per known email and host with the same helpers the claims use
under their locks (``ExportsMixin._pending_count``, ``FilesMixin._active_connections``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Result, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Chunk, EmailSlot, Export, HostSlot
from service.db.repo_base import check_states
from service.db.repo_exports import ExportsMixin
from service.db.repo_files import FilesMixin
from service.db.repo_jobs import _require_job
from service.states import EXPORT_PENDING, EXPORT_STATES, ExportState


@dataclass(frozen=True)
class ExportView:
    """One export of a job with the chunk it exports and that chunk's file counters."""

    export: Export
    chunk: Chunk


@dataclass(frozen=True)
class Politeness:
    """Pending exports per notify email and active download connections per host, now."""

    pending_by_email: dict[str, int]
    connections_by_host: dict[str, int]


class OverviewMixin(ExportsMixin, FilesMixin):
    """Read-only dashboard queries (one short read transaction each)."""

    async def list_job_exports(self, job_id: str, state: str | Sequence[str] | None = None, *,
                               limit: int = 100, offset: int = 0) -> list[ExportView]:
        """Exports of a job in id order (optionally by state), each with its chunk."""
        states = check_states(state, EXPORT_STATES, "export")
        if limit < 1 or offset < 0:
            raise ValueError(f"limit must be >= 1 and offset >= 0, got {limit}, {offset}")
        query = _with_chunk(job_id).order_by(Export.id).limit(limit).offset(offset)
        if states:
            query = query.where(Export.state.in_(states))

        async def tx(s: AsyncSession) -> list[ExportView]:
            await _require_job(s, job_id)
            return _views(await s.execute(query))
        return await self._run(tx, read_only=True)

    async def active_exports(self, job_id: str, *, limit: int = 20,
                             ready: int = 5) -> list[ExportView]:
        """A job's exports still staging (up to ``limit``, oldest first), then its newest
        ``ready`` ready ones."""
        staging = (_with_chunk(job_id).where(Export.state.in_(EXPORT_PENDING))
                   .order_by(Export.id).limit(limit))
        newest = (_with_chunk(job_id).where(Export.state == ExportState.READY)
                  .order_by(Export.id.desc()).limit(ready))

        async def tx(s: AsyncSession) -> list[ExportView]:
            return [*_views(await s.execute(staging)),
                    *reversed(_views(await s.execute(newest)))]
        return await self._run(tx, read_only=True)

    async def politeness(self, *, now: datetime | None = None) -> Politeness:
        """Pending exports of every known notify email and live connections of every known
        download host (emails and hosts are those the claims have registered)."""
        async def tx(s: AsyncSession) -> Politeness:
            t = self.now(now)
            emails = list((await s.execute(select(EmailSlot.email)
                                           .order_by(EmailSlot.email))).scalars())
            hosts = list((await s.execute(select(HostSlot.host)
                                          .order_by(HostSlot.host))).scalars())
            return Politeness(
                pending_by_email={e: await self._pending_count(s, e) for e in emails},
                connections_by_host={h: await self._active_connections(s, h, None, t)
                                      for h in hosts})
        return await self._run(tx, read_only=True)


def _with_chunk(job_id: str) -> Select[Export, Chunk]:
    """A job's exports, each with the chunk it exports."""
    return select(Export, Chunk).join(Chunk, Chunk.id == Export.chunk_id).where(
        Export.job_id == job_id)


def _views(rows: Result[Export, Chunk]) -> list[ExportView]:
    return [ExportView(export, chunk) for export, chunk in rows]
