"""What a job gives back: its files (one entry per file) and, once it ends, the absolute paths
of the files on disk with the failures listed beside them (like parfive's ``Results``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

TERMINAL_STATES = frozenset({"succeeded", "completed_with_errors", "failed", "cancelled"})
PAGE_SIZE = 500  # the API's largest page


@dataclass(frozen=True)
class FileEntry:
    """One file of a job. ``path`` is absolute (on the daemon's machine); ``size`` is the
    size on disk once done, else the size JSOC listed (None when it listed none)."""

    id: int
    path: str
    record: str
    segment: str | None
    state: str
    size: int | None
    sha256: str | None
    error: str | None
    url: str

    @classmethod
    def from_api(cls, item: dict[str, Any], download_dir: str | None = None) -> FileEntry:
        path = item.get("path") or _join(download_dir, item["dest_path"])
        size = item["bytes_done"] if item["state"] == "done" else item.get("size_expected")
        return cls(id=item["id"], path=path, record=item["record"], segment=item["segment"],
                   state=item["state"], size=size, sha256=item.get("sha256"),
                   error=item.get("error"), url=item["url"])

    def as_dict(self) -> dict[str, Any]:
        """The entry as ``jsoc-bulk files --json`` prints it."""
        data = asdict(self)
        del data["url"], data["id"]
        return {"id": self.id, **data}


def _join(root: str | None, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}" if root else relative


@dataclass(frozen=True)
class FileError:
    """A file that was not downloaded: its record, where it would be, and why."""

    record: str
    segment: str | None
    path: str
    url: str
    state: str
    error: str | None

    def __str__(self) -> str:
        return f"{self.record}{{{self.segment or ''}}}: {self.state}: {self.error or 'no error'}"


class Results(list[str]):
    """Absolute paths of a job's downloaded files; ``errors`` lists the files that failed or
    were skipped (nothing is raised for them); ``job`` is the job's final status."""

    def __init__(self, paths: list[str], errors: list[FileError], job: dict[str, Any]) -> None:
        super().__init__(paths)
        self.errors = errors
        self.job = job

    def __repr__(self) -> str:
        return (f"<Results: {len(self)} file(s), {len(self.errors)} error(s), job "
                f"{self.job.get('id')} {self.job.get('state')}>")


def results_from(entries: list[FileEntry], job: dict[str, Any]) -> Results:
    """Results of an ended job from all its file entries."""
    paths = [e.path for e in entries if e.state == "done"]
    errors = [FileError(e.record, e.segment, e.path, e.url, e.state, e.error)
              for e in entries if e.state in ("failed", "skipped")]
    if job.get("state") in ("failed", "cancelled") and not errors and job.get("error"):
        errors.append(FileError(str(job.get("id")), None, "", "", job["state"], job["error"]))
    return Results(paths, errors, job)
