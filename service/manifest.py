"""A manifest per job, next to its files: one JSON line per finished file.

``<job directory>/jsoc-bulk-manifest-<job id>.jsonl``, where the job directory is the part of
the download root that the job's ``path_template`` fixes before its first per-file field
(``{series}/{T_REC:%Y}/{filename}`` -> ``<root>/hmi.M_720s``; ``{filename}`` -> the root).
Each line: ``{"record", "segment", "T_REC", "path", "size", "sha256"}`` with ``path``
relative to the manifest's directory (the archive can be moved as a whole); a file fetched
again (after ``verify`` and ``retry``) gets a new line: the last line of a path wins.

Lines are appended after each group commit that finished files (one database read of those
rows, then one ``write`` per manifest, off the event loop), so a line never names a file whose
row is not done. Crash safety, per process and manifest, the first time it is touched:

* a torn last line (a write cut short by a power loss) is cut back to the last newline;
  readers skip an unparsable last line too;
* if the manifest has fewer lines than the job has finished files (the process died between a
  commit and its append, or the job finished before manifests existed), it is rewritten from
  the database (keyset pages, a temporary file renamed over it).

Several workers may append to one manifest (each ``write`` of whole lines is one append on a
local file system); a rewrite while another worker appends can lose that worker's lines, which
``jsoc-bulk verify JOB`` does not need (it reads the database).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import string
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from service.jsoc.records import split_record
from service.timeutil import TimeFormatError, parse_calendar

if TYPE_CHECKING:  # the CLI reads manifests without loading the database layer
    from service.db.repo import Repo
    from service.db.repo_verified import DoneFile

log = logging.getLogger(__name__)

MANIFEST_PREFIX = "jsoc-bulk-manifest-"
MANIFEST_SUFFIX = ".jsonl"
REBUILD_PAGE = 5000
MAX_JOBS_CACHED = 1000


def manifest_name(job_id: str) -> str:
    return f"{MANIFEST_PREFIX}{job_id}{MANIFEST_SUFFIX}"


def fixed_depth(template: str) -> int:
    """How many leading directories of a path_template are the same for every file of a job
    (literal text and ``{series}``)."""
    prefix = ""
    for literal, name, spec, _conv in string.Formatter().parse(template):
        prefix += literal
        if name is None:
            continue
        if name.lower() != "series" or spec:
            break
        prefix += "series"
    return prefix.count("/")


def manifest_path(root: Path, template: str, dest_path: str, job_id: str) -> Path:
    """Where the job's manifest goes, from one of its files' relative path."""
    parts = dest_path.split("/")
    depth = min(fixed_depth(template), len(parts) - 1)
    return root.joinpath(*parts[:depth]) / manifest_name(job_id)


def t_rec_of(record: str) -> str | None:
    """The first prime-key value of a record that is a time, as the record writes it."""
    for value in split_record(record)[1]:
        try:
            parse_calendar(value)
        except TimeFormatError:
            continue
        return value
    return None


def manifest_line(row: DoneFile, root: Path, manifest: Path) -> str:
    path = os.path.relpath(root / row.dest_path, manifest.parent)
    return json.dumps({"record": row.record, "segment": row.segment,
                       "T_REC": t_rec_of(row.record), "path": path, "size": row.size,
                       "sha256": row.sha256}, separators=(",", ":")) + "\n"


def repair_tail(path: Path) -> bool:
    """Cut a torn last line (no final newline) back to the last newline; True if cut."""
    try:
        with open(path, "rb+") as fh:
            end = fh.seek(0, os.SEEK_END)
            if end == 0:
                return False
            fh.seek(end - 1)
            if fh.read(1) == b"\n":
                return False
            keep = _last_newline_end(fh, end)
            fh.truncate(keep)
            log.warning("manifest %s: cut a torn last line (%d bytes)", path, end - keep)
            return True
    except FileNotFoundError:
        return False


def _last_newline_end(fh: BinaryIO, end: int, block: int = 1 << 16) -> int:
    pos = end
    while pos > 0:
        start = max(0, pos - block)
        fh.seek(start)
        data = fh.read(pos - start)
        index = data.rfind(b"\n")
        if index >= 0:
            return start + index + 1
        pos = start
    return 0


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def read_manifest(path: Path) -> Iterator[dict[str, Any]]:
    """The entries of a manifest (a torn or unparsable last line is skipped; ValueError for a
    bad line elsewhere)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        previous: str | None = None
        for number, line in enumerate(fh, 1):
            if previous is not None:
                yield _entry(previous, path, number - 1)
            previous = line
        if previous is not None and previous.endswith("\n"):
            yield _entry(previous, path, number)


def _entry(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError:
        raise ValueError(f"{path}:{number}: not a JSON line") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ValueError(f"{path}:{number}: not a manifest entry (no path)")
    return entry


def find_manifests(directory: Path) -> list[Path]:
    """The manifests in and below a directory."""
    return sorted(directory.rglob(f"{MANIFEST_PREFIX}*{MANIFEST_SUFFIX}"))


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = text.encode()
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


class ManifestWriter:
    """Appends finished files to their jobs' manifests, in the background of a worker."""

    def __init__(self, repo: Repo, root: Path) -> None:
        self.repo = repo
        self.root = root
        self._pending: list[int] = []
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._templates: OrderedDict[str, str] = OrderedDict()
        self._checked: set[Path] = set()
        self._closing = False

    def files_done(self, file_ids: Iterable[int]) -> None:
        """Files whose done rows were just committed (called by the recorder)."""
        self._pending.extend(file_ids)
        if self._pending:
            self._kick.set()
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="manifest-writer")

    async def close(self) -> None:
        """Write what is queued (a write in progress finishes), then stop."""
        self._closing = True
        if self._task is not None and not self._task.done():
            self._kick.set()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        await self._write_pending()

    async def _run(self) -> None:
        while not (self._closing and not self._pending):
            await self._kick.wait()
            self._kick.clear()
            await self._write_pending()

    async def _write_pending(self) -> None:
        ids, self._pending = self._pending, []
        if not ids:
            return
        try:
            by_manifest: dict[tuple[Path, str], list[str]] = {}
            for row in await self.repo.done_files(ids):
                path = manifest_path(self.root, await self._template(row.job_id),
                                     row.dest_path, row.job_id)
                lines = by_manifest.setdefault((path, row.job_id), [])
                lines.append(manifest_line(row, self.root, path))
            for (path, job_id), lines in by_manifest.items():
                if not await self._first_touch(path, job_id, len(lines)):
                    await asyncio.to_thread(_append, path, "".join(lines))
        except Exception:  # the manifest is a convenience: never stop a worker for it
            log.exception("could not update the manifest of %d finished file(s)", len(ids))

    async def _template(self, job_id: str) -> str:
        template = self._templates.get(job_id)
        if template is None:
            job = await self.repo.get_job(job_id)
            template = str((job.spec if job else {}).get("path_template") or "{filename}")
            self._templates[job_id] = template
            while len(self._templates) > MAX_JOBS_CACHED:
                self._templates.popitem(last=False)
        return template

    async def _first_touch(self, path: Path, job_id: str, adding: int) -> bool:
        """Repair a torn tail and catch up lines lost in a crash (see the module docstring):
        a rewrite when the manifest, with the ``adding`` lines of this commit, would have
        fewer lines than the job has done files. True when rewritten (it then holds this
        commit's rows too)."""
        if path in self._checked:
            return False
        self._checked.add(path)
        await asyncio.to_thread(repair_tail, path)
        lines = await asyncio.to_thread(count_lines, path)
        done = await self.repo.job_done_count(job_id)
        if lines + adding >= done:
            return False
        await self.rebuild(job_id, path)
        return True

    async def rebuild(self, job_id: str, path: Path) -> None:
        """Rewrite a job's manifest from its done rows."""
        temp = path.with_name(path.name + ".tmp")
        temp.parent.mkdir(parents=True, exist_ok=True)
        temp.unlink(missing_ok=True)
        after = 0
        while page := await self.repo.job_done_files(job_id, after_id=after,
                                                     limit=REBUILD_PAGE):
            text = "".join(manifest_line(r, self.root, path) for r in page)
            await asyncio.to_thread(_append, temp, text)
            after = page[-1].id
        if temp.exists():
            os.replace(temp, path)
        log.info("manifest %s: rewritten from the database", path)

