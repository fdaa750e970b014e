"""POST /jobs/{id}/retry with a list of files: fetch again the finished files a verify found bad.

The API checks each listed file itself (size and sha256 against its row, on its own disk);
those that differ or are missing are marked failed, their bad copies removed (a corrupt file
of the right size would otherwise be adopted again) and their stored copies forgotten; then
the job is retried as usual. Listed files that check out are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from service.api.schemas import MAX_OFFSET
from service.db.repo import Repo
from service.db.repo_verified import DoneFile
from service.download.paths import UnsafePathError, safe_join
from service.filecheck import Expected, check_file

MAX_FILES = 10000
FileId = Annotated[int, Field(ge=1, le=MAX_OFFSET)]  # a row id (32-bit on both databases)


class RetryBody(BaseModel):
    """Optional body of POST /jobs/{id}/retry."""

    model_config = ConfigDict(extra="forbid")
    files: list[FileId] = Field(default_factory=list, max_length=MAX_FILES,
                             description="Ids of done files to check again and fetch again if "
                             "missing or different from what was recorded (from `jsoc-bulk "
                             "verify`); without it, failed files and chunks are retried")


def _bad_files(root: Path, rows: list[DoneFile]) -> dict[int, str]:
    """File id -> what is wrong, for the rows whose file on disk does not match."""
    bad: dict[int, str] = {}
    for row in rows:
        try:
            path = safe_join(root, row.dest_path)
        except UnsafePathError as exc:
            bad[row.id] = str(exc)
            continue
        mismatch = check_file(Expected(path, row.size, row.sha256))
        if mismatch is not None:
            bad[row.id] = mismatch.reason
    return bad


def _remove(root: Path, rows: list[DoneFile]) -> None:
    for row in rows:
        with contextlib.suppress(OSError, UnsafePathError):
            safe_join(root, row.dest_path).unlink(missing_ok=True)


async def refetch_bad_files(repo: Repo, root: Path, job_id: str, file_ids: list[int]) -> int:
    """Mark the listed done files that fail the check as failed and remove them from disk;
    returns how many were marked."""
    rows = [r for r in await repo.done_files(file_ids) if r.job_id == job_id]
    bad = await asyncio.to_thread(_bad_files, root, rows)
    if not bad:
        return 0
    marked = await repo.mark_files_bad(job_id, bad)
    await asyncio.to_thread(_remove, root, marked)
    return len(marked)
