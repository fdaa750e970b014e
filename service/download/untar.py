"""Streamed, resumable unpacking of a url-tar export straight from HTTP (no tar on disk).

The body is parsed as it arrives (headers by `service.download.tarstream`: ustar/POSIX/GNU,
GNU long names, PAX `path`/`size`; the archive ends at a zero block or a clean EOF at a member
boundary). Each regular member goes to `<dest>.part` (sha256 computed while
writing), is verified (size; FITS structure for FITS names), fsynced and renamed into place;
then `on_member` is awaited with the tar offset where the next header starts. A member is
finished in a worker thread while the next one is received, but members are reported in order.

Resume: `start_offset` (an `end_offset` reported earlier) is asked for with `Range` +
`If-Range`; a 200 instead of a 206 restarts from byte 0 and reports every member again
(placing a member again atomically replaces an identical file). Errors are those of
`service.download.fetch`, with `bytes_done` = the last member boundary reported.

Only regular files are unpacked. Directories are skipped; symlinks, hard links, devices, FIFOs,
absolute names and `..` components are refused (FetchPermanentError naming the member), and
destinations go through `safe_join`, so nothing is written outside `root`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from service.download.fetch import (
    DEFAULT_CHUNK,
    DEFAULT_TIMEOUT,
    READ_BUFSIZE,
    FetchPermanentError,
    FetchRetryableError,
    FetchVerifyError,
    ValidatorCallback,
    parse_content_range,
    raise_for_http,
    resume_headers,
    validator_of,
)
from service.download.partfile import write_all
from service.download.paths import (
    UnsafePathError,
    open_nofollow,
    part_path,
    replace_durably,
    safe_join,
)
from service.download.tarstream import (
    BLOCK,
    ZERO_BLOCK,
    BadHeader,
    TarBody,
    TarHeader,
    Truncated,
    member_name,
    meta_record,
    padded,
    parse_header,
    read_meta,
)
from service.download.verify import VerificationError, verify_file

_REGULAR = {b"0", b"\0", b"7"}
_REFUSED = {b"1": "a hard link", b"2": "a symlink", b"3": "a character device",
            b"4": "a block device", b"6": "a FIFO"}
_NET_ERRORS = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError)


@dataclass(frozen=True)
class MemberResult:
    """One member placed under the root; `end_offset` is where the next tar header starts."""

    name: str  # member name in the tar (leading "./" removed)
    path: Path
    size: int
    sha256: str
    end_offset: int


@dataclass(frozen=True)
class TarResult:
    """What one `unpack_tar` call did (members before `resumed_from` are not listed)."""

    members: list[MemberResult]
    skipped: list[str]  # place() said None, or a directory
    end_offset: int  # tar offset just after the end-of-archive block (or the final EOF)
    validator: str | None  # ETag or Last-Modified, to send as If-Range when resuming
    resumed_from: int  # offset the completing response started at
    bytes_received: int  # body bytes read in this call (all attempts)
    restarts: int  # times the stream was started again from byte 0


MemberCallback = Callable[[MemberResult], Awaitable[None]]
PlaceFunc = Callable[[str], str | None]


class UnsafeMemberError(FetchPermanentError):
    """A tar member that may not be unpacked (link, device, escaping or invalid name)."""


class _Restart(Exception):
    """Internal: ask again from byte zero."""


@dataclass
class _Run:
    """Options and the state shared by the attempts of one `unpack_tar` call."""

    url: str
    root: Path
    place: PlaceFunc
    on_member: MemberCallback | None
    on_validator: ValidatorCallback | None
    chunk_size: int
    timeout: aiohttp.ClientTimeout
    verify_fits: bool | None
    durable: bool
    executor: ThreadPoolExecutor
    validator: str | None = None
    done: int = 0  # last member boundary reported (or the attempt's start)
    received: int = 0
    restarts: int = 0
    members: list[MemberResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    made_dirs: set[Path] = field(default_factory=set)


async def unpack_tar(
    session: aiohttp.ClientSession, url: str, root: Path, place: PlaceFunc, *,
    start_offset: int = 0, validator: str | None = None,
    on_member: MemberCallback | None = None, on_validator: ValidatorCallback | None = None,
    chunk_size: int = DEFAULT_CHUNK, timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    verify_fits: bool | None = None, max_restarts: int = 3, durable: bool = True,
) -> TarResult:
    """Stream the tar at `url` and unpack it under `root`, from `start_offset` on.

    `place(member_name)` gives the destination relative to `root`, or None to skip the member.
    `on_member` is awaited after each member is durably in place (store its `end_offset` as
    the resume point); `on_validator` with the validator of every fresh (200) response.
    `start_offset` needs the `validator` of the response it came from, else it starts at 0.
    """
    if start_offset % BLOCK or start_offset < 0:
        raise ValueError(f"start_offset must be a tar block boundary, got {start_offset}")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="untar")
    run = _Run(url, Path(root), place, on_member, on_validator, chunk_size, timeout,
               verify_fits, durable, executor, validator=validator)
    offset = start_offset if validator else 0
    try:
        while True:
            try:
                return await _attempt(session, run, offset)
            except _Restart:
                offset, run.validator = 0, None
                run.restarts += 1
                if run.restarts > max_restarts:
                    raise FetchRetryableError(
                        f"{url}: restarted {max_restarts} times (server keeps changing the tar "
                        "or answering ranges inconsistently)", bytes_done=run.done) from None
    finally:  # let queued file work (clean-ups after an error) end before returning
        await asyncio.to_thread(executor.shutdown, wait=True)


async def _attempt(session: aiohttp.ClientSession, run: _Run, offset: int) -> TarResult:
    """One request from `offset`; returns the result or raises FetchError / _Restart."""
    headers = resume_headers(offset, run.validator)
    run.done = offset
    try:
        async with session.get(run.url, headers=headers, timeout=run.timeout,
                               read_bufsize=READ_BUFSIZE) as resp:
            if resp.status == 416:
                total = parse_content_range(resp.headers.get("Content-Range"))[2]
                if offset and total == offset:  # the archive ended right at that boundary
                    return _result(run, offset, offset)
                raise _Restart
            raise_for_http(resp, run.url, offset, run.validator)
            offset = await _start_body(resp, run, offset)
            return await _unpack(TarBody(resp.content, offset, run), run, offset)
    except _NET_ERRORS as exc:
        raise FetchRetryableError(
            f"{run.url}: tar stream interrupted ({type(exc).__name__}: {exc}); resume from "
            f"member boundary {run.done}", bytes_done=run.done, validator=run.validator) from exc


async def _start_body(resp: aiohttp.ClientResponse, run: _Run, offset: int) -> int:
    """The tar offset the body starts at: `offset` for a matching 206, 0 for a 200."""
    if resp.status == 206:
        if parse_content_range(resp.headers.get("Content-Range"))[0] != offset:
            raise _Restart
        run.validator = validator_of(resp.headers) or run.validator
        return offset
    if offset:
        run.restarts += 1  # the server ignored Range, or If-Range did not match
    run.validator, run.done = validator_of(resp.headers), 0
    if run.on_validator is not None:
        await run.on_validator(run.validator)
    return 0


def _result(run: _Run, start: int, end: int) -> TarResult:
    return TarResult(run.members, run.skipped, end, run.validator, start, run.received,
                     run.restarts)


async def _unpack(body: TarBody, run: _Run, start: int) -> TarResult:
    """Parse headers and members until the end of the archive."""
    placer = _Placer(run)
    try:
        end = await _read_members(body, run, placer)
        await placer.settle()
        return _result(run, start, end)
    except BadHeader as exc:
        if body.header_offset == start and start:
            raise _Restart from None  # the resume point is not a header (tar changed)
        await placer.settle()
        raise FetchVerifyError(f"{run.url}: {exc}", bytes_done=run.done,
                               validator=run.validator) from None
    except (*_NET_ERRORS, Truncated) as exc:
        await placer.settle()  # the member received before the cut is still placed
        why = "ended early" if isinstance(exc, Truncated) else f"broke ({type(exc).__name__})"
        raise FetchRetryableError(
            f"{run.url}: tar stream {why} at byte {body.offset}; members up to byte {run.done} "
            "are in place, resume from there", bytes_done=run.done,
            validator=run.validator) from exc
    except UnsafeMemberError as exc:
        await placer.settle()  # the member before the refused one is complete
        exc.bytes_done = run.done
        raise


async def _read_members(body: TarBody, run: _Run, placer: _Placer) -> int:
    """Handle members until the end-of-archive block or EOF; returns the end offset."""
    meta: dict[str, str] = {}
    while True:
        body.header_offset = body.offset
        block = await body.read_exact(BLOCK)
        if not block:
            return body.offset  # clean EOF at a member boundary
        if len(block) < BLOCK:
            raise Truncated
        if block == ZERO_BLOCK:
            return body.offset  # end of archive (what follows is zero padding)
        header = parse_header(block, body.header_offset)
        if header.kind in (b"L", b"K", b"x", b"g"):
            meta.update(meta_record(header.kind, await read_meta(body, header)))
            continue
        if meta:
            header = TarHeader(meta.get("path", header.name), int(meta.get("size", header.size)),
                             header.kind, header.linkname)
            meta.clear()
        await _handle_member(body, run, placer, header)


async def _handle_member(body: TarBody, run: _Run, placer: _Placer, header: TarHeader) -> None:
    """Refuse, skip or write one member whose header has just been read."""
    try:
        name = member_name(header)
    except UnsafePathError as exc:
        raise _unsafe(run, header.name, str(exc)) from None
    if header.kind in _REFUSED:
        target = f" -> {header.linkname!r}" if header.linkname else ""
        raise _unsafe(run, name or header.name, f"it is {_REFUSED[header.kind]}{target} "
                                                "(only regular files are unpacked)")
    if header.kind == b"5" or name is None:  # a directory: its files say where they go
        if name is not None:
            run.skipped.append(name)
        return await body.skip(padded(header.size))
    if header.kind not in _REGULAR:
        raise _unsafe(run, name, f"unsupported member type {header.kind!r}")
    relative = run.place(name)
    if relative is None:
        run.skipped.append(name)
        return await body.skip(padded(header.size))
    await _write_member(body, run, placer, _MemberFile(run, name, relative, header.size))


def _unsafe(run: _Run, name: str, why: str) -> UnsafeMemberError:
    return UnsafeMemberError(f"{run.url}: tar member {name!r} refused: {why}",
                             bytes_done=run.done, validator=run.validator)


async def _write_member(body: TarBody, run: _Run, placer: _Placer, member: _MemberFile) -> None:
    """Receive the member's data batch by batch into its part file, then hand it over."""
    try:
        batch, remaining = await _next_batch(body, member.size, run.chunk_size)
        while remaining:
            await member.write(batch)
            batch, remaining = await _next_batch(body, remaining, run.chunk_size)
        await body.skip(padded(member.size) - member.size)
        await placer.submit(member, batch, body.offset)
    except BaseException:
        run.executor.submit(member.discard_sync)  # after its queued writes (one thread)
        raise


async def _next_batch(body: TarBody, remaining: int, limit: int) -> tuple[list[bytes], int]:
    """Up to `limit` bytes of the `remaining` member data; (blocks, still remaining)."""
    batch, size = [], 0
    while remaining and size < limit:
        data = await body.read(min(remaining, limit - size))
        if not data:
            raise Truncated
        batch.append(data)
        size += len(data)
        remaining -= len(data)
    return batch, remaining


class _MemberFile:
    """One member's part file. Its file operations (including safe_join and open) run on the
    unpack's single worker thread, so they happen in tar order while the loop receives."""

    def __init__(self, run: _Run, name: str, relative: str, size: int) -> None:
        self.run, self.name, self.relative, self.size = run, name, relative, size
        self.dest: Path | None = None
        self._hasher = hashlib.sha256()
        self._fh: io.FileIO | None = None
        self._job: asyncio.Future[None] | None = None

    async def write(self, batch: list[bytes]) -> None:
        """Queue a batch (double buffering: waits only for this member's previous one)."""
        await self.wait()
        self._job = asyncio.get_running_loop().run_in_executor(
            self.run.executor, self._write_sync, batch)

    async def wait(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            try:
                await job
            except UnsafePathError as exc:
                raise _unsafe(self.run, self.name, str(exc)) from None

    def _write_sync(self, batch: list[bytes]) -> None:
        if self._fh is None:
            self.dest = safe_join(self.run.root, self.relative)
            if self.dest.parent not in self.run.made_dirs:
                self.dest.parent.mkdir(parents=True, exist_ok=True)
                self.run.made_dirs.add(self.dest.parent)
            self._fh = open_nofollow(part_path(self.dest), "wb")
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        write_all(self._fh, data)
        self._hasher.update(data)

    def finish_sync(self, batch: list[bytes], end_offset: int) -> MemberResult:
        """Write the last batch, verify, and rename the part file into place."""
        try:
            self._write_sync(batch)
            assert self._fh is not None and self.dest is not None
            self._fh.close()
            part = part_path(self.dest)
            verify_file(part, expected_size=self.size, fits=self.run.verify_fits,
                        display_name=self.dest.name)
        except BaseException:
            self.discard_sync()
            raise
        if self.run.durable:
            replace_durably(part, self.dest)
        else:
            os.replace(part, self.dest)
        return MemberResult(self.name, self.dest, self.size, self._hasher.hexdigest(),
                            end_offset)

    def discard_sync(self) -> None:
        """Close and remove the part file of a member that will not be finished."""
        if self._fh is not None:
            self._fh.close()
        if self.dest is not None:
            part_path(self.dest).unlink(missing_ok=True)


class _Placer:
    """Finishes each member on the worker thread while the next one is received, and
    reports members to `on_member` in tar order once they are in place."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._pending: tuple[asyncio.Future[MemberResult], str] | None = None

    async def submit(self, member: _MemberFile, batch: list[bytes], end_offset: int) -> None:
        await self.settle()
        await member.wait()
        future = asyncio.get_running_loop().run_in_executor(
            self._run.executor, member.finish_sync, batch, end_offset)
        self._pending = (future, member.name)

    async def settle(self) -> None:
        """Wait for the member being finished, then report it."""
        if self._pending is None:
            return
        (future, name), self._pending = self._pending, None
        run = self._run
        try:
            result = await future
        except VerificationError as exc:
            raise FetchVerifyError(f"{run.url}: tar member {name!r}: {exc}; the part file "
                                   "was removed", bytes_done=run.done,
                                   validator=run.validator) from exc
        except UnsafePathError as exc:
            raise _unsafe(run, name, str(exc)) from None
        run.done = result.end_offset
        run.members.append(result)
        if run.on_member is not None:
            await run.on_member(result)
