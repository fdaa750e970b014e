"""Workers: heartbeat (with lease renewal), listing, and releasing leases on shutdown.

A heartbeat renews only the file leases the worker says it still works on (``files``): a
file whose lease it owns but no lane holds any more (its outcome could not be recorded, a
task died) is handed back in the same transaction instead of being renewed forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Chunk, Export, File, Job, Worker
from service.db.repo_base import RepoBase, guarded, lease_until, rowcount
from service.states import ConditionKind, FileState

log = logging.getLogger(__name__)
CONDITIONS = tuple(ConditionKind)  # worker-wide conditions a heartbeat's ``holding`` may carry


@dataclass(frozen=True)
class HeldFiles:
    """The files a worker's lanes work on now (``ids``: their leases are renewed).
    ``orphans_before``: also hand back the other downloading files it owns, last touched
    before this time (None: a claim was in flight, so its new rows are not known yet)."""

    ids: frozenset[int]
    orphans_before: datetime | None = None


class WorkersMixin(RepoBase):
    """Worker registry and lease housekeeping."""

    async def heartbeat(self, worker_id: str, *, hostname: str, pid: int,
                        pid_space: str | None = None,
                        holding: dict[str, Any] | None = None,
                        renew_lease_seconds: float | None = None,
                        files: HeldFiles | None = None,
                        now: datetime | None = None) -> int:
        """Register or refresh a worker; with ``renew_lease_seconds`` also extend every lease
        it still holds (of files: only those in ``files``, when given; see HeldFiles).
        Returns the number of leases renewed."""
        async def tx(s: AsyncSession) -> int:
            t = self.now(now)
            stmt = self.insert(Worker).values(id=worker_id, hostname=hostname, pid=pid,
                                              pid_space=pid_space,
                                              started_at=t, heartbeat_at=t, holding=holding)
            await s.execute(stmt.on_conflict_do_update(
                index_elements=["id"],
                set_={"hostname": hostname, "pid": pid, "pid_space": pid_space,
                      "heartbeat_at": t, "holding": holding,
                      "stopped_at": None}))
            if renew_lease_seconds is None:
                return 0
            return await self._renew(s, worker_id, lease_until(t, renew_lease_seconds), files)
        return await self._run(tx)

    async def _renew(self, s: AsyncSession, worker_id: str, until: datetime,
                     files: HeldFiles | None) -> int:
        renewed = 0
        for model in (Chunk, Export, File):
            owned = [model.lease_owner == worker_id]
            if model is File and files is not None:
                await self._release_orphans(s, worker_id, files)
                owned.append(File.id.in_(sorted(files.ids)))
            result = await s.execute(guarded(model).where(*owned)
                                     .values(lease_expires_at=until))
            renewed += rowcount(result)
        result = await s.execute(guarded(Job).where(Job.plan_lease_owner == worker_id)
                                 .values(plan_lease_expires_at=until))
        return renewed + rowcount(result)

    async def _release_orphans(self, s: AsyncSession, worker_id: str,
                               files: HeldFiles) -> None:
        """Hand back the downloading files this worker owns but no longer works on."""
        if files.orphans_before is None:
            return
        result = await s.execute(
            guarded(File).where(File.lease_owner == worker_id, File.state == FileState.DOWNLOADING,
                                File.id.not_in(sorted(files.ids)),
                                File.updated_at < files.orphans_before)
            .values(state=FileState.PENDING, lease_token=File.lease_token + 1, lane=None,
                    lease_owner=None, lease_expires_at=None, updated_at=self.now()))
        if rowcount(result):
            log.warning("worker %s: handed back %d download(s) it no longer worked on",
                        worker_id, rowcount(result))

    async def list_workers(self) -> list[Worker]:
        """Known workers, most recent heartbeat first."""
        async def tx(s: AsyncSession) -> list[Worker]:
            rows = await s.execute(select(Worker).order_by(Worker.heartbeat_at.desc()))
            return list(rows.scalars())
        return await self._run(tx, read_only=True)

    async def worker_conditions(self, *, stale_after: float,
                                now: datetime | None = None) -> dict[str, dict[str, Any]]:
        """Conditions live workers report in their heartbeat (``disk_full``: since, error,
        path), by worker id; for health checks."""
        t = self.now(now)
        return {w.id: {k: v for k, v in w.holding.items() if k in CONDITIONS}
                for w in await self.list_workers()
                if w.stopped_at is None and w.holding
                and w.heartbeat_at >= t - timedelta(seconds=stale_after)
                and any(k in w.holding for k in CONDITIONS)}

    async def reap_dead_workers(self, worker_id: str, *, hostname: str,
                                is_alive: Callable[[int], bool], stale_after: float,
                                pid_space: str | None = None,
                                now: datetime | None = None) -> list[str]:
        """Release at once everything held by workers known to be dead: on this host and in
        this pid namespace with their process gone (or with this process's pid, so an
        earlier life of it), or silent for ``stale_after`` seconds anywhere. Returns their
        ids."""
        t = self.now(now)
        dead = [w.id for w in await self.list_workers()
                if w.id != worker_id and w.stopped_at is None
                and (w.heartbeat_at < t - timedelta(seconds=stale_after)
                     or (w.hostname == hostname and w.pid_space == pid_space
                         and not is_alive(w.pid)))]
        for other in dead:
            await self.release_leases(other, now=now)
        return dead

    async def release_leases(self, worker_id: str, *, now: datetime | None = None) -> int:
        """Give back everything a worker holds (graceful shutdown): downloading files return
        to pending with their progress, reservations and polls become claimable at once.
        Returns the number of rows released."""
        async def tx(s: AsyncSession) -> int:
            t = self.now(now)
            cleared = {"lease_owner": None, "lease_expires_at": None}
            released = 0
            files = await s.execute(
                guarded(File).where(File.lease_owner == worker_id,
                                    File.state == FileState.DOWNLOADING)
                .values(state=FileState.PENDING, lease_token=File.lease_token + 1, updated_at=t,
                        lane=None, **cleared))
            released += rowcount(files)
            for model in (Chunk, Export, File):
                result = await s.execute(guarded(model).where(model.lease_owner == worker_id)
                                         .values(**cleared))
                released += rowcount(result)
            jobs = await s.execute(guarded(Job).where(Job.plan_lease_owner == worker_id)
                                   .values(plan_lease_owner=None, plan_lease_expires_at=None))
            await s.execute(guarded(Worker).where(Worker.id == worker_id)
                            .values(stopped_at=t, heartbeat_at=t, holding=None))
            return released + rowcount(jobs)
        return await self._run(tx)
