"""The rows of a url-tar export: one *tar row* (the unit of transfer) and one *member row* per
listed file.

* The tar row has the key ``tar:<protocol>:<recordset>`` (``tar_key``), the tar's URL and host,
  and keeps the unpack's resume offset (a member boundary) in ``bytes_done`` and the tar's
  validator in ``etag`` / ``last_modified``. It is leased by a lane like any file, but is not a
  file of the job: the chunk counters leave it out (``NOT_TAR_ROW``) and nothing is stored
  for it.
* A member row is an ordinary file row (its key ``<protocol>:<record>:<segment>`` as for a
  per-file export, so stored copies and other jobs' rows are shared) whose URL is
  ``<tar url>#<name in the tar>``. While it waits for its tar its host is ``tar:<tar row id>``
  (``tar_host``): a host no ``host_slots`` row names, so no claim ever takes it on its own.
  Placed from a stored copy it becomes a ``local`` row like any other.

``attach_members`` keeps this true whenever rows are (re)listed or redirected, ``revive_tars``
puts a finished tar row back to work when members wait for it again, and ``finish_idle_tars``
closes a tar row no member waits for (all were stored already) without fetching it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import Any, NamedTuple

from sqlalchemy import String, cast, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from service.db.models import Export, File
from service.db.repo_base import guarded
from service.states import FILE_OPEN, FileState

TAR_PREFIX = "tar:"
MAX_KEY_RECORDSET = 400  # file_key is 512 characters at most
IS_TAR_ROW = File.file_key.startswith(TAR_PREFIX, autoescape=True)
NOT_TAR_ROW = ~IS_TAR_ROW
_Member = aliased(File)


class MemberDone(NamedTuple):
    """A member placed from its tar: its row, content hash and size."""

    file_id: int
    sha256: str
    size: int


@dataclass(frozen=True)
class TarMember:
    """A member row waiting for its tar: where the member named ``name`` goes."""

    file_id: int
    name: str
    dest_path: str


def tar_key(protocol: str, recordset: str) -> str:
    """Content key of a chunk's tar (a long record set is hashed to fit the column)."""
    if len(recordset) > MAX_KEY_RECORDSET:
        recordset = "sha256:" + sha256(recordset.encode()).hexdigest()
    return f"{TAR_PREFIX}{protocol}:{recordset}"


def is_tar_key(file_key: str) -> bool:
    """Whether a content key is a tar row's."""
    return file_key.startswith(TAR_PREFIX)


def tar_host(tar_id: int) -> str:
    """The pseudo host of the members waiting for tar row ``tar_id``."""
    return f"{TAR_PREFIX}{tar_id}"


def member_name(url: str) -> str | None:
    """The name in the tar of a member row's URL (None for any other URL)."""
    _, mark, name = url.partition("#")
    return name if mark else None


def _tar_host_of(tar: Any) -> Any:
    """SQL: ``tar_host(tar.id)``."""
    return literal(TAR_PREFIX, String) + cast(tar.id, String)


async def attach_members(s: AsyncSession, export_ids: Iterable[int], t: datetime) -> None:
    """Give the unfinished member rows of these exports their tar's pseudo host (listing
    them sets the URL's host), drop tar rows of earlier exports of the same chunks, and
    revive tar rows whose members wait again."""
    for export_id in sorted(set(export_ids)):
        chunk_id = await s.scalar(select(Export.chunk_id).where(Export.id == export_id))
        await s.execute(guarded(File).where(
            File.chunk_id == chunk_id, IS_TAR_ROW, File.export_id != export_id,
            File.state.in_(FILE_OPEN))
            .values(state=FileState.SKIPPED, lease_owner=None, lease_expires_at=None, lane=None,
                    updated_at=t))
        tars = (await s.execute(select(File.id, File.url).where(
            File.export_id == export_id, IS_TAR_ROW, File.state != FileState.SKIPPED))).all()
        for tar_id, url in tars:
            await s.execute(guarded(File).where(
                File.export_id == export_id, File.url.startswith(url + "#", autoescape=True),
                File.state != FileState.DONE, File.source_path.is_(None))
                .values(host=tar_host(tar_id), updated_at=t))
        if tars:
            await revive_tars(s, t, File.export_id == export_id)


async def revive_tars(s: AsyncSession, t: datetime, *where: Any) -> None:
    """Tar rows (matching ``where``) that are done or failed while members still wait for
    them: pending again, unpacked from the start (members already done are not rewritten)."""
    waiting = select(_Member.id).where(_Member.host == _tar_host_of(File),
                                       _Member.state == FileState.PENDING).exists()
    await s.execute(guarded(File).where(
        *where, IS_TAR_ROW, File.state.in_((FileState.DONE, FileState.FAILED)), waiting)
        .values(state=FileState.PENDING, bytes_done=0, etag=None, last_modified=None, attempts=0,
                next_attempt_at=None, error=None, updated_at=t))


async def finish_idle_tars(s: AsyncSession, t: datetime, *where: Any) -> None:
    """Pending tar rows (matching ``where``) that no member waits for: done, nothing to fetch
    (every member was already stored)."""
    waiting = select(_Member.id).where(_Member.host == _tar_host_of(File),
                                       _Member.state == FileState.PENDING).exists()
    await s.execute(guarded(File).where(*where, IS_TAR_ROW, File.state == FileState.PENDING,
                                        ~waiting)
                    .values(state=FileState.DONE, updated_at=t))
