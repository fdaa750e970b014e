"""JSOC export status codes -> what the service should do, and typed errors that carry JSOC's
own message. The codes: docs/jsoc-protocol.md §5.1."""

from __future__ import annotations

import enum
import re
from typing import Any

# Export request ids: JSOC_YYYYMMDD_NNN, optionally _IN or _X_IN
# (docs/jsoc-protocol.md §3.8, step 11).
REQUEST_ID_RE = re.compile(r"JSOC_\d{8}_\d+(?:_X)?(?:_IN)?")


class StatusKind(enum.StrEnum):
    DONE = "done"  # 0: files listed
    PENDING = "pending"  # 1, 2, 12: keep polling
    TRANSIENT = "transient"  # 6, 7, HTTP 5xx, timeouts, connection errors: retry later
    TOO_LARGE = "too_large"  # 3: split the request
    EXPIRED = "expired"  # 5: export again
    PERMANENT = "permanent"  # 4, 25 and anything unknown: fail with JSOC's message


_KIND_BY_STATUS = {
    0: StatusKind.DONE,
    1: StatusKind.PENDING,
    2: StatusKind.PENDING,
    12: StatusKind.PENDING,
    3: StatusKind.TOO_LARGE,
    4: StatusKind.PERMANENT,
    5: StatusKind.EXPIRED,
    6: StatusKind.TRANSIENT,
    7: StatusKind.TRANSIENT,
    25: StatusKind.PERMANENT,
}

_DEFAULT_MESSAGES = {
    3: "Request too large",
    4: "JSOC export request failed",
    5: "Request was completed but is now deleted, 7 day limit exceeded",
    6: "RequestID not recognized yet",
    7: "pending-request limit reached",
    25: "One or more data files are offline",
}


def classify_status(status: int) -> StatusKind:
    """What a jsoc_fetch status code means for the service."""
    return _KIND_BY_STATUS.get(status, StatusKind.PERMANENT)


def classify_http(http_status: int) -> StatusKind:
    """HTTP-level failures: 5xx, 408 and 429 are transient; other errors permanent."""
    if http_status >= 500 or http_status in (408, 429):
        return StatusKind.TRANSIENT
    return StatusKind.PERMANENT


def pending_request_ids(message: str | None) -> list[str]:
    """Request ids named in a status-7 message, in order, without duplicates.

    "User a@b.org has 1 pending export requests (JSOC_20250101_042); please wait …" ->
    ["JSOC_20250101_042"].
    """
    seen: dict[str, None] = {}
    for match in REQUEST_ID_RE.finditer(message or ""):
        seen.setdefault(match.group(0), None)
    return list(seen)


class JsocError(Exception):
    """A failure reported by JSOC or on the way to it. `kind` says how to react."""

    kind: StatusKind = StatusKind.PERMANENT
    metric_kind = "error"  # the label counted in metrics (the client sets it where it fails)

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        reply: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.reply = reply  # the ExportReply or raw dict that carried the error, if any

    @property
    def retryable(self) -> bool:
        return self.kind is StatusKind.TRANSIENT


class JsocTransientError(JsocError):
    """Try again later: status 6, HTTP 5xx, timeouts, connection errors, garbled replies."""

    kind = StatusKind.TRANSIENT

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class JsocMalformedReply(JsocTransientError):
    """A reply that does not have the shape JSOC's replies have (wrong types, no file list,
    not JSON): retried with backoff, and shown on the job while it lasts."""


class JsocHttpError(JsocTransientError):
    """A non-200 HTTP answer from a CGI; `kind` follows `classify_http`."""

    def __init__(self, message: str, *, http_status: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.http_status = http_status
        self.kind = classify_http(http_status)


class JsocPendingLimitError(JsocTransientError):
    """Status 7: a previous export of this email (or IP) is still pending. Poll those ids
    (`pending_ids`) instead of submitting again."""

    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.pending_ids = pending_request_ids(message)


class JsocTooLargeError(JsocError):
    """Status 3: split the record set. `size_mb` and `count` are JSOC's estimate, if sent."""

    kind = StatusKind.TOO_LARGE

    def __init__(self, message: str, *, size_mb: int | None = None, count: int | None = None,
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.size_mb = size_mb
        self.count = count


class JsocExpiredError(JsocError):
    """Status 5: the export's files were deleted; export again."""

    kind = StatusKind.EXPIRED


class JsocPermanentError(JsocError):
    """Status 4, 25 or unknown, or a jsoc_info error: do not retry as is."""

    kind = StatusKind.PERMANENT


def error_for_status(
    status: int, message: str | None, *, request_id: str | None = None, reply: Any = None,
    size_mb: int | None = None, count: int | None = None,
) -> JsocError:
    """The typed exception for a non-success jsoc_fetch status, keeping JSOC's message."""
    text = message or _DEFAULT_MESSAGES.get(status, "JSOC export request failed")
    full = f"{text} [status={status}]"
    kw: dict[str, Any] = {"status": status, "request_id": request_id, "reply": reply}
    if status == 7:
        return JsocPendingLimitError(full, **kw)
    kind = classify_status(status)
    if kind is StatusKind.TRANSIENT:
        return JsocTransientError(full, **kw)
    if kind is StatusKind.TOO_LARGE:
        return JsocTooLargeError(full, size_mb=size_mb, count=count, **kw)
    if kind is StatusKind.EXPIRED:
        return JsocExpiredError(full, **kw)
    return JsocPermanentError(full, **kw)
