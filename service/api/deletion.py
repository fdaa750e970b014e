"""Deleting a job's files from disk, only ever inside the download directory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

from service.db.repo import Repo
from service.download.paths import UnsafePathError, part_path, safe_join
from service.manifest import manifest_path
from service.states import FileState

log = logging.getLogger(__name__)
PAGE = 500


class JobFile(NamedTuple):
    """What deleting needs to know about one file row."""

    dest_path: str
    file_key: str
    done: bool


async def collect_job_files(repo: Repo, job_id: str) -> list[JobFile]:
    """Every file row of a job (all pages)."""
    files: list[JobFile] = []
    offset = 0
    while True:
        page = await repo.list_files(job_id, limit=PAGE, offset=offset)
        files += [JobFile(f.dest_path, f.file_key, f.state == FileState.DONE) for f in page]
        if len(page) < PAGE:
            return files
        offset += PAGE


def _remove(root: Path, relative: str, done: bool) -> tuple[bool, bool]:
    """Remove a file (and its .part) if it lies inside ``root``; (removed, refused)."""
    try:
        dest = safe_join(root, relative)
    except UnsafePathError as exc:
        # a symlink leading out, or the name is now a directory: leave it alone
        log.warning("not deleting %s: %s", relative, exc)
        return False, True
    removed = False
    for path in (dest, part_path(dest)) if done else (part_path(dest),):
        try:
            path.unlink()
            removed = removed or path == dest
        except FileNotFoundError:
            continue
    _prune_empty_dirs(dest.parent, Path(os.path.realpath(root)))
    return removed, False


def _prune_empty_dirs(directory: Path, root: Path) -> None:
    """Remove now-empty directories between ``directory`` and ``root`` (never root itself)."""
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


async def delete_job_files(repo: Repo, root: Path | None, files: list[JobFile],
                           ) -> tuple[int, list[str]]:
    """Delete finished files (and partial downloads) of a deleted job.

    A finished file is also forgotten as a stored copy, so later jobs fetch it again rather
    than link to a missing file. Returns (files deleted, paths kept because unsafe).
    """
    if root is None or not files:
        return 0, []
    deleted, kept = 0, []
    for f in files:
        if f.done:
            stored = await repo.get_stored_file(f.file_key)
            if stored is not None and stored.path == f.dest_path:
                await repo.forget_stored_file(f.file_key)
        removed, refused = await asyncio.to_thread(_remove, root, f.dest_path, f.done)
        deleted += removed
        if refused:
            kept.append(f.dest_path)
    return deleted, kept


def delete_manifest(root: Path | None, job_id: str, template: str,
                    files: list[JobFile]) -> None:
    """Remove a deleted job's manifest (``service.manifest``), and directories left empty."""
    if root is None or not files:
        return
    path = manifest_path(root, template, files[0].dest_path, job_id)
    with contextlib.suppress(OSError):
        path.unlink()
        _prune_empty_dirs(path.parent, Path(os.path.realpath(root)))
