"""Disk full is a worker-wide condition, not a file's failure.

When writing a file fails with ENOSPC (or EDQUOT) the worker stops claiming downloads, hands
back what its lanes hold without counting an attempt, says so on the job (an event) and in its
heartbeat row (``holding["disk_full"]``, shown by ``/workers`` and ``Repo.worker_conditions``),
and resumes by itself once the download root's filesystem has ``RESUME_MARGIN`` more bytes
free than when it filled up (checked with statvfs at each download tick), or after
``PROBE_SECONDS`` with one more try.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
RESUME_MARGIN = 1 << 20  # bytes freed since the failure that count as "space is back"
PROBE_SECONDS = 60.0  # without that, try again after this long anyway


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether an error (or its cause) is ENOSPC / EDQUOT."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if getattr(exc, "os_errno", None) in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__
    return False


def free_bytes(path: Path) -> int:
    """Bytes available to this process on the filesystem of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@dataclass
class DiskFull:
    """The condition as first seen."""

    since: datetime
    free_at_failure: int
    message: str
    noticed: float  # monotonic


class DiskWatch:
    """Tracks the disk-full condition of one worker's download root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.full: DiskFull | None = None

    def report(self, message: str) -> bool:
        """A write failed for lack of space; True when this starts the condition."""
        if self.full is not None:
            return False
        try:
            free = free_bytes(self.root)
        except OSError:
            free = 0
        self.full = DiskFull(datetime.now(UTC), free, message, time.monotonic())
        log.error("disk full under %s (%s); downloads paused until space is freed",
                  self.root, message)
        return True

    def blocked(self) -> bool:
        """Still full? Clears the condition once space came back (or the probe is due)."""
        full = self.full
        if full is None:
            return False
        try:
            free = free_bytes(self.root)
        except OSError:
            return True
        probe = time.monotonic() - full.noticed >= PROBE_SECONDS
        if free < full.free_at_failure + RESUME_MARGIN and not probe:
            return True
        log.warning("disk space under %s is back (%d bytes free); downloads resume",
                    self.root, free)
        self.full = None
        return False

    def summary(self) -> dict[str, Any] | None:
        """For the heartbeat row: since when, what failed, bytes free then."""
        if self.full is None:
            return None
        return {"since": self.full.since.isoformat(), "error": self.full.message,
                "free_bytes_at_failure": self.full.free_at_failure, "path": str(self.root)}
