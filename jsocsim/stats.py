"""Per-client, per-email, per-export and per-file counters (GET /_sim/stats).

"Bytes served again" are bytes of a file that had already been sent before (to anyone for the
per-file figure, to that client for the per-client figure): byte ranges are tracked, so a
correct resume after a reset adds nothing, while restarting from byte 0 counts the overlap.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


class ByteCoverage:
    """A set of [start, end) byte ranges; `add` returns how many bytes were already covered."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []

    def add(self, start: int, end: int) -> int:
        if end <= start:
            return 0
        overlap = sum(max(0, min(end, e) - max(start, s)) for s, e in self.ranges)
        merged: list[tuple[int, int]] = []
        for s, e in sorted([*self.ranges, (start, end)]):
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        self.ranges = merged
        return overlap


@dataclass
class ClientStats:
    requests: int = 0
    cgi_requests: int = 0
    download_requests: int = 0
    active_downloads: int = 0
    peak_concurrent_downloads: int = 0
    refused_connections: int = 0
    bytes_served: int = 0
    bytes_served_again: int = 0
    pending_exports: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EmailStats:
    exp_requests: int = 0
    pending_exports: int = 0
    peak_pending_exports: int = 0
    status7: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ExportStats:
    status: int | None = None
    email: str = ""
    requested_times: int = 0
    status_polls: int = 0


@dataclass
class FileStats:
    requests: int = 0
    bytes_served: int = 0
    bytes_served_again: int = 0
    full_downloads: int = 0


class Stats:
    """Counters updated by the handlers; `snapshot()` is the shape docs/emulator.md shows
    under "Stats"."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter except the downloads still in flight."""
        active = {ip: c.active_downloads for ip, c in getattr(self, "clients", {}).items()}
        self.clients: defaultdict[str, ClientStats] = defaultdict(ClientStats)
        self.emails: defaultdict[str, EmailStats] = defaultdict(EmailStats)
        self.exports: defaultdict[str, ExportStats] = defaultdict(ExportStats)
        self.files: defaultdict[str, FileStats] = defaultdict(FileStats)
        self.endpoints: defaultdict[str, int] = defaultdict(int)
        self.violation_count = 0
        self._file_coverage: defaultdict[str, ByteCoverage] = defaultdict(ByteCoverage)
        self._client_coverage: defaultdict[tuple[str, str], ByteCoverage] = defaultdict(
            ByteCoverage)
        for ip, n in active.items():
            if n:
                self.clients[ip].active_downloads = n

    # ---- CGI side -------------------------------------------------------------------------
    def cgi_request(self, client_ip: str, endpoint: str) -> None:
        """One CGI call (show_series, jsoc_info, jsoc_fetch, ...)."""
        client = self.clients[client_ip]
        client.requests += 1
        client.cgi_requests += 1
        self.endpoints[endpoint] += 1

    def exp_request(self, email: str, client_ip: str, status: int,
                    requestid: str | None = None) -> None:
        """One exp_request answered with `status` (and the request id, new or duplicate)."""
        record = self.emails[email]
        record.exp_requests += 1
        if status == 7:
            record.status7 += 1
        if requestid:
            export = self.exports[requestid]
            export.email = email
            export.requested_times += 1
            export.status = status

    def export_status(self, requestid: str, status: int) -> None:
        """One exp_status poll of `requestid` answered with `status`."""
        export = self.exports[requestid]
        export.status_polls += 1
        export.status = status

    def pending_changed(self, email: str, client_ip: str, n_pending: int,
                        ip_pending: int | None = None) -> None:
        """Pending exports of `email` are now `n_pending` (and of `client_ip`, `ip_pending`)."""
        record = self.emails[email]
        record.pending_exports = n_pending
        record.peak_pending_exports = max(record.peak_pending_exports, n_pending)
        if ip_pending is not None:
            self.clients[client_ip].pending_exports = ip_pending

    def violation(self, kind: str, who: str, detail: str) -> None:
        """A politeness violation by an email (contains '@') or a client IP."""
        entry = {"kind": kind, "detail": detail, "at": time.time()}
        target = self.emails[who] if "@" in who else self.clients[who]
        target.violations.append(entry)
        self.violation_count += 1

    # ---- download side ------------------------------------------------------------------------
    def download_started(self, client_ip: str, path: str) -> None:
        """A file request is being served (counts toward the concurrent-connection peak)."""
        client = self.clients[client_ip]
        client.requests += 1
        client.download_requests += 1
        client.active_downloads += 1
        client.peak_concurrent_downloads = max(client.peak_concurrent_downloads,
                                               client.active_downloads)
        self.files[path].requests += 1

    def download_refused(self, client_ip: str, path: str, active: int) -> None:
        """A concurrent download was refused (503): counted and recorded as a violation."""
        client = self.clients[client_ip]
        client.requests += 1
        client.download_requests += 1
        client.refused_connections += 1
        self.files[path].requests += 1
        self.violation("download_connection", client_ip,
                       f"{path} refused: {active} download(s) already active")

    def download_finished(self, client_ip: str, path: str, nbytes: int, range_start: int,
                          file_size: int) -> None:
        """A file response ended after sending `nbytes` body bytes starting at `range_start`."""
        client = self.clients[client_ip]
        client.active_downloads = max(0, client.active_downloads - 1)
        self.add_bytes(client_ip, path, nbytes, range_start, file_size)

    def add_bytes(self, client_ip: str, path: str, nbytes: int, range_start: int,
                  file_size: int) -> None:
        """Count `nbytes` of `path` from `range_start` sent to `client_ip`."""
        end = range_start + nbytes
        again_file = self._file_coverage[path].add(range_start, end)
        again_client = self._client_coverage[(client_ip, path)].add(range_start, end)
        client, record = self.clients[client_ip], self.files[path]
        client.bytes_served += nbytes
        client.bytes_served_again += again_client
        record.bytes_served += nbytes
        record.bytes_served_again += again_file
        if range_start == 0 and nbytes == file_size:
            record.full_downloads += 1

    def file_changed(self, path: str) -> None:
        """The content of `path` changed: earlier bytes no longer count as a first copy."""
        self._file_coverage.pop(path, None)
        for key in [k for k in self._client_coverage if k[1] == path]:
            del self._client_coverage[key]

    # ---- report ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """JSON-ready copy of every counter."""

        def plain(table: dict[str, Any]) -> dict[str, Any]:
            return {key: copy.deepcopy(vars(value)) for key, value in table.items()}

        return {
            "clients": plain(self.clients),
            "emails": plain(self.emails),
            "exports": plain(self.exports),
            "files": plain(self.files),
            "endpoints": dict(self.endpoints),
            "violations": self.violation_count,
            "bytes_served": sum(c.bytes_served for c in self.clients.values()),
            "bytes_served_again": sum(f.bytes_served_again for f in self.files.values()),
        }
