"""Resumable HTTP download of one file: `.part` file, Range + If-Range, verify, fsync, rename.

Rules (docs/architecture.md §2.6): bytes go to `dest.part`; a resumed request sends
`Range: bytes=N-` and `If-Range: <validator>` and only a 206 starting at N is appended; a 200
means the server ignored the range or the file changed, so the part restarts from zero; 416
means the part is complete (total == N) or bigger than the file (restart). The final file
appears only after the size (and FITS structure) checks passed, via fsync + os.replace.

When a connection breaks mid-body, aiohttp drops what it had buffered but not yet handed over
(bounded by its flow control, a few x READ_BUFSIZE); those bytes are fetched again on resume.
Downloads ask for `Accept-Encoding: identity` so byte counts match Content-Length.

With `place=False` a small fresh body (under HOLD_BELOW) is held in memory instead of being
written as it arrives: the result carries it, and `place_part` verifies, writes and renames it
in one go, off the transfer's critical path (while the next file is received). A body that does
not complete is written to the part file as it would have been, so resuming works the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from service.download.errors import DownloadError
from service.download.limits import retry_after_seconds
from service.download.partfile import HOLD_BELOW, INLINE_BELOW, PartWriter, write_part
from service.download.paths import lstat_size, part_path, replace_durably
from service.download.verify import VerificationError, sha256_file, verify_body, verify_file

ProgressCallback = Callable[[int], Awaitable[None]]
ValidatorCallback = Callable[[str | None], Awaitable[None]]

DEFAULT_CHUNK = 1 << 20
READ_BUFSIZE = 1 << 18  # aiohttp buffers up to 2x this; lost if the connection breaks
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=60.0)
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    sha256: str | None
    validator: str | None  # ETag or Last-Modified to send as If-Range when resuming
    resumed_from: int  # first byte offset of the response that completed the file
    bytes_received: int  # body bytes read in this call (all attempts)
    restarts: int  # times the part file was discarded and started over
    body: bytes | None = None  # a complete body held in memory: the part file is not written


class FetchError(DownloadError):
    """A download that did not finish. `retryable` says whether trying again makes sense;
    `bytes_done` is what the .part file holds (kept for resume unless it was discarded)."""

    retryable = True

    def __init__(self, message: str, *, http_status: int | None = None,
                 retry_after: float | None = None, bytes_done: int = 0,
                 validator: str | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.retry_after = retry_after
        self.bytes_done = bytes_done
        self.validator = validator


class FetchRetryableError(FetchError):
    """Truncated body, reset, timeout, 5xx/429: try again later (resuming from bytes_done)."""


class FetchPermanentError(FetchError):
    """404, 403, other 4xx: this URL will not work as is."""

    retryable = False


class FetchLocalError(FetchRetryableError):
    """Writing the file here failed (disk full, permissions, I/O error): not the server's
    fault. ``os_errno`` is the OSError's errno (ENOSPC: the disk is full)."""

    def __init__(self, message: str, *, os_errno: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.os_errno = os_errno


def local_error(what: str, exc: OSError, part: Path) -> FetchLocalError:
    """A FetchLocalError for an OSError met while writing ``part`` (its size kept)."""
    try:
        done = lstat_size(part)
    except OSError:
        done = 0
    return FetchLocalError(f"{what}: {exc.strerror or exc} (errno {exc.errno})",
                           os_errno=exc.errno, bytes_done=done)


class FetchVerifyError(FetchError):
    """The complete body failed the size or FITS check; the part file was removed."""


@dataclass
class _Options:
    url: str
    expected_size: int | None
    on_progress: ProgressCallback | None
    on_validator: ValidatorCallback | None
    chunk_size: int
    progress_bytes: int
    progress_seconds: float
    verify_fits: bool | None
    compute_sha256: bool
    timeout: aiohttp.ClientTimeout
    write_mode: str
    durable: bool
    place: bool


class _Restart(Exception):
    """Internal: discard the part file and ask again from byte zero."""


def validator_of(headers: Mapping[str, str]) -> str | None:
    """A strong ETag if the response has one, else Last-Modified (usable as If-Range)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """`bytes 100-199/1000` -> (100, 199, 1000); `bytes */1000` -> (None, None, 1000)."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        return None, None, None
    start, end, total = match.groups()
    return (int(start) if start else None, int(end) if end else None,
            int(total) if total and total != "*" else None)


async def fetch_file(
    session: aiohttp.ClientSession, url: str, dest: Path, *,
    expected_size: int | None = None, etag: str | None = None,
    on_progress: ProgressCallback | None = None, on_validator: ValidatorCallback | None = None,
    chunk_size: int = DEFAULT_CHUNK, progress_bytes: int = 8 << 20,
    progress_seconds: float = 2.0, verify_fits: bool | None = None,
    compute_sha256: bool = True, timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    max_restarts: int = 3, write_mode: str = "auto", durable: bool = True,
    place: bool = True,
) -> FetchResult:
    """Download `url` to `dest`, resuming `dest.part` when `etag` (the validator stored from an
    earlier response) is given. `on_validator` is awaited with the validator of every fresh
    (200) response so the caller can store it before bytes arrive; `on_progress` with
    bytes_done at most every `progress_bytes` / `progress_seconds`, and once at the end.
    `verify_fits` None checks FITS structure when the name ends .fits/.fts/.fit.
    `durable` fsyncs the file and its directory around the rename (turn off only in benches).
    `write_mode` "auto" writes small bodies inline and large ones in a thread (overlapped
    with receiving the next batch).
    `place=False` stops once the body is complete: the result's path is the part file, to be
    verified and renamed by `place_part` (off the transfer's critical path); a small fresh
    body is held in memory instead (`FetchResult.body`, not reported as progress until it is
    written, which happens only when it is cut off).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    opts = _Options(url, expected_size, on_progress, on_validator, chunk_size, progress_bytes,
                    progress_seconds, verify_fits, compute_sha256, timeout, write_mode, durable,
                    place)
    stats = {"received": 0, "restarts": 0}
    validator = etag
    while True:
        part = part_path(dest)
        offset = lstat_size(part)  # SymlinkError for a planted link: never followed
        if offset and (validator is None or (expected_size is not None
                                             and offset > expected_size)):
            part.unlink()  # cannot resume safely without a validator, or the part is too long
            offset = 0
        try:
            return await _attempt(session, opts, dest, part, offset, validator, stats)
        except OSError as exc:  # writing here failed (ENOSPC, EIO...): not the server's fault
            raise local_error(f"writing {part}", exc, part) from exc
        except _Restart:
            part.unlink(missing_ok=True)
            validator = None
            stats["restarts"] += 1
            if stats["restarts"] > max_restarts:
                raise FetchRetryableError(
                    f"{url}: restarted {max_restarts} times (server keeps changing the file or "
                    "answering ranges inconsistently)") from None


def resume_headers(offset: int, validator: str | None) -> dict[str, str]:
    """Request headers for a body from byte `offset` (the whole body when 0): identity
    encoding, so byte counts match Content-Length, and Range + If-Range to resume."""
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = validator or ""
    return headers


async def _attempt(session: aiohttp.ClientSession, opts: _Options, dest: Path, part: Path,
                   offset: int, validator: str | None, stats: dict[str, int]) -> FetchResult:
    """One request; returns the result or raises FetchError / _Restart."""
    headers = resume_headers(offset, validator)
    try:
        async with session.get(opts.url, headers=headers, timeout=opts.timeout,
                               read_bufsize=READ_BUFSIZE) as resp:
            if resp.status == 416:
                total = parse_content_range(resp.headers.get("Content-Range"))[2]
                if offset and total == offset:  # the part already holds the whole file
                    return await _finish(opts, dest, part, offset, validator, None, stats, offset)
                raise _Restart
            raise_for_http(resp, opts.url, offset, validator)
            return await _receive(resp, opts, dest, part, offset, validator, stats)
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
        done = lstat_size(part)
        raise FetchRetryableError(f"{opts.url}: transfer interrupted after {done} bytes "
                                  f"({type(exc).__name__}: {exc}); the part file is kept for "
                                  "resume", bytes_done=done, validator=validator) from exc
    except aiohttp.ClientError as exc:  # a malformed response (e.g. a bad Content-Length)
        raise FetchRetryableError(f"{opts.url}: malformed response ({type(exc).__name__}: "
                                  f"{exc})", bytes_done=lstat_size(part),
                                  validator=validator) from exc


def raise_for_http(resp: aiohttp.ClientResponse, url: str, offset: int,
                    validator: str | None) -> None:
    if resp.status in (200, 206):
        return
    message = f"{url}: HTTP {resp.status} {resp.reason or ''}".rstrip()
    retryable = resp.status >= 500 or resp.status in (408, 425, 429)
    error = FetchRetryableError if retryable else FetchPermanentError
    raise error(message, http_status=resp.status, retry_after=retry_after_seconds(resp.headers),
                bytes_done=offset, validator=validator)


def _declared_total(resp: aiohttp.ClientResponse, offset: int) -> int | None:
    """Full file size from Content-Range (206) or Content-Length (200); _Restart on a 206
    that does not start where the part ends."""
    if resp.status == 206:
        start, _, total = parse_content_range(resp.headers.get("Content-Range"))
        if start != offset:
            raise _Restart
        return total
    return resp.content_length


async def _receive(resp: aiohttp.ClientResponse, opts: _Options, dest: Path, part: Path,
                   offset: int, validator: str | None, stats: dict[str, int]) -> FetchResult:
    """Stream the body into the part file (append for 206, from zero for 200)."""
    if resp.status == 200:
        if offset:
            stats["restarts"] += 1  # server ignored Range, or If-Range did not match
            part.unlink(missing_ok=True)  # the body starts over: never resume from the old part
        offset = 0
        validator = validator_of(resp.headers)
        if opts.on_validator is not None:
            await opts.on_validator(validator)
    total = _declared_total(resp, offset)
    if opts.expected_size is not None and total is not None and total != opts.expected_size:
        part.unlink(missing_ok=True)
        raise FetchVerifyError(f"{opts.url}: server says the file is {total} bytes, expected "
                               f"{opts.expected_size}", http_status=resp.status)
    hasher = await _prefix_hash(part, offset) if opts.compute_sha256 else None
    start, done, body = offset, offset, None
    mode = _write_mode(opts, offset, total)
    async with PartWriter(part, append=bool(offset), hasher=hasher, mode=mode) as out:
        reporter = _Progress(opts, done)
        try:
            async for batch in _blocks(resp.content, opts.chunk_size):
                nbytes = await out.write(batch)
                done += nbytes
                stats["received"] += nbytes
                if mode != "memory":  # bytes held in memory are not on disk yet
                    await reporter.maybe(done)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
            await out.flush()
            await reporter.final(out.size)
            raise FetchRetryableError(
                f"{opts.url}: body cut off after {out.size} of {total or '?'} bytes "
                f"({type(exc).__name__}); the part file is kept for resume",
                bytes_done=out.size, validator=validator) from exc
        if mode == "memory" and done == total:
            body = out.take()  # complete: placed later (else written to the part on exit)
    return await _finish(opts, dest, part, done, validator, hasher, stats, start, total, body)


def _write_mode(opts: _Options, offset: int, total: int | None) -> str:
    """How a body is written: held in memory when small, fresh and placed later; else the
    requested mode ("auto": inline when small, in a thread when large)."""
    if not opts.place and not offset and total is not None and total < HOLD_BELOW:
        return "memory"
    if opts.write_mode == "auto":
        return "inline" if total is not None and total - offset < INLINE_BELOW else "thread"
    return opts.write_mode


async def _blocks(content: aiohttp.StreamReader, size: int) -> AsyncIterator[list[bytes]]:
    """Body chunks in batches of about `size` bytes (fewer disk writes, no joining copy)."""
    pending: list[bytes] = []
    pending_len = 0
    while True:
        try:
            data = await content.read(size - pending_len)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            pending += salvage_buffered(content)
            if pending:  # hand over what arrived before the connection broke
                yield pending
            raise
        except BaseException:
            if pending:
                yield pending
            raise
        if not data:
            break
        pending.append(data)
        pending_len += len(data)
        if pending_len >= size:
            yield pending
            pending, pending_len = [], 0
    if pending:
        yield pending


def salvage_buffered(content: aiohttp.StreamReader) -> list[bytes]:
    """Body bytes aiohttp had buffered when the connection broke.

    Once a payload error is set, ``StreamReader.read`` raises at once and drops what is still
    buffered: a truncated body that arrives in one burst (then FIN) would otherwise leave nothing
    to resume from. The buffer holds body bytes in order (identity encoding is requested), so
    they are safe to keep; this uses aiohttp's private buffer and degrades to nothing if that
    changes.
    """
    salvaged: list[bytes] = []
    try:
        while content._buffer:
            salvaged.append(content._read_nowait_chunk(-1))
    except (AttributeError, IndexError):
        pass
    return salvaged


async def _prefix_hash(part: Path, offset: int) -> hashlib._Hash:
    if not offset:
        return hashlib.sha256()
    return await asyncio.to_thread(sha256_file, part, 1 << 20, offset)


async def _finish(opts: _Options, dest: Path, part: Path, size: int, validator: str | None,
                  hasher: hashlib._Hash | None, stats: dict[str, int], start: int,
                  total: int | None = None, body: bytes | None = None) -> FetchResult:
    """Check the size and structure, report final progress, then rename atomically.

    The final progress call comes before the rename so the caller can still refuse it: a
    worker whose lease was taken over (fencing) raises there and never puts the file in place.
    """
    expected = opts.expected_size if opts.expected_size is not None else total
    if expected is not None and size < expected:
        raise FetchRetryableError(f"{opts.url}: body ended after {size} of {expected} bytes; "
                                  "the part file is kept for resume", bytes_done=size,
                                  validator=validator)
    if not opts.place:
        return FetchResult(part, size, hasher.hexdigest() if hasher else None, validator, start,
                           stats["received"], stats["restarts"], body)
    try:
        await asyncio.to_thread(verify_file, part, expected_size=expected,
                                fits=opts.verify_fits, display_name=dest.name)
    except VerificationError as exc:
        part.unlink(missing_ok=True)
        raise FetchVerifyError(f"{opts.url}: {exc}; the part file was removed") from exc
    if hasher is None and opts.compute_sha256:
        hasher = await asyncio.to_thread(sha256_file, part)
    if opts.on_progress is not None:
        await opts.on_progress(size)
    if opts.durable:
        await asyncio.to_thread(replace_durably, part, dest)
    else:
        os.replace(part, dest)
    return FetchResult(dest, size, hasher.hexdigest() if hasher else None, validator, start,
                       stats["received"], stats["restarts"])


def place_part(part: Path, dest: Path, *, expected_size: int | None,
                fits: bool | None = None, sync_dir: bool = True, sync_file: bool = True,
                body: bytes | None = None) -> int:
    """Verify a complete part file (size, FITS structure), fsync it (unless `sync_file` is
    False: the caller syncs many files at once) and rename it to `dest` (blocking). Returns
    the size; a file failing verification is removed and FetchVerifyError raised. `body`: a
    complete body held in memory (`FetchResult.body`), verified before it is written."""
    if body is not None:
        return _place_body(body, part, dest, expected_size=expected_size, fits=fits,
                           sync_dir=sync_dir, sync_file=sync_file)
    try:
        verify_file(part, expected_size=expected_size, fits=fits, display_name=dest.name)
    except VerificationError as exc:
        part.unlink(missing_ok=True)
        raise FetchVerifyError(f"{dest.name}: {exc}; the part file was removed") from exc
    size = part.stat().st_size
    replace_durably(part, dest, sync_dir=sync_dir, sync_file=sync_file)
    return size


def _place_body(body: bytes, part: Path, dest: Path, *, expected_size: int | None,
                fits: bool | None, sync_dir: bool, sync_file: bool) -> int:
    """Verify a body held in memory, then write it as the part file and rename it: a bad body
    never reaches the disk."""
    try:
        verify_body(body, dest.name, expected_size=expected_size, fits=fits)
    except VerificationError as exc:
        raise FetchVerifyError(f"{dest.name}: {exc}; nothing was written") from exc
    write_part(part, body)
    replace_durably(part, dest, sync_dir=sync_dir, sync_file=sync_file)
    return len(body)


class _Progress:
    """Calls on_progress(bytes_done) at most every progress_bytes / progress_seconds."""

    def __init__(self, opts: _Options, done: int) -> None:
        self._opts = opts
        self._last_bytes = done
        self._last_time = time.monotonic()

    async def maybe(self, done: int) -> None:
        if self._opts.on_progress is None:
            return
        now = time.monotonic()
        if (done - self._last_bytes >= self._opts.progress_bytes
                or now - self._last_time >= self._opts.progress_seconds):
            self._last_bytes, self._last_time = done, now
            await self._opts.on_progress(done)

    async def final(self, done: int) -> None:
        if self._opts.on_progress is not None and done != self._last_bytes:
            await self._opts.on_progress(done)
