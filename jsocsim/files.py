"""Static file serving for SUMS paths and export directories, with JSOC's connection policy.

Fast path: aiohttp FileResponse (sendfile; Range → 206/416, ETag, Last-Modified). ETag-valued
`If-Range` is checked here (aiohttp only understands the date form). Faults that need to break
the body (reset, truncate) use a hand-written StreamResponse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from jsocsim.state import SimState, client_ip, get_state

log = logging.getLogger(__name__)
CHUNK = 64 * 1024
REFUSAL_GRACE = 0.05  # seconds


def etag_of(path: Path) -> str:
    """The strong ETag aiohttp's FileResponse sends for `path` (without quotes)."""
    st = path.stat()
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


async def active_after_grace(state: SimState, ip: str, limit: int) -> int:
    """Active downloads of `ip`, giving a download whose last byte is already out a moment
    (REFUSAL_GRACE) to finish its bookkeeping before a new one is refused."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REFUSAL_GRACE
    while True:
        active = state.stats.clients[ip].active_downloads if ip in state.stats.clients else 0
        if active < limit or loop.time() >= deadline:
            return active
        await asyncio.sleep(0.002)


async def handle_file(request: web.Request) -> web.StreamResponse:
    """GET/HEAD of a /SUM…/ path: policy check, faults, then the file."""
    state = get_state(request)
    url_path = request.path
    if "/../" in url_path or url_path.endswith("/.."):
        raise web.HTTPBadRequest(text="path must not contain '..'")
    ip = client_ip(request)
    limit = state.config.download_connections_per_client
    active = await active_after_grace(state, ip, limit)
    if active >= limit:
        state.stats.download_refused(ip, url_path, active)
        return web.Response(status=503, headers={"Retry-After": "1"},
                            text=f"Too many concurrent downloads: {limit} allowed per client.\n")
    seen_before = state.stats.files[url_path].requests > 0 if url_path in state.stats.files \
        else False
    state.stats.download_started(ip, url_path)
    try:
        return await serve_file(state, request, url_path, seen_before)
    except BaseException:
        state.stats.download_finished(ip, url_path, 0, 0, 0)
        raise


async def serve_file(state: SimState, request: web.Request, url_path: str,
                     seen_before: bool) -> web.StreamResponse:
    """The response for an admitted download; download_finished is called exactly once."""
    ip = client_ip(request)
    path = await state.store.locate(url_path)
    if path is None or not path.is_file():
        state.stats.download_finished(ip, url_path, 0, 0, 0)
        if state.store.is_directory(url_path):
            return web.Response(status=403, text=(
                f"{url_path} is a directory (a directory segment): export it with "
                "method=url-tar to get its files.\n"))
        return web.Response(status=404, text=f"File not found: {url_path}\n")
    if seen_before and state.faults.should_change_file(url_path):
        await change_file(state, url_path, path)
    effective = strip_range_if_needed(state, request, url_path, path)
    size = path.stat().st_size
    for kind in ("reset", "truncate"):
        if request.method == "GET" and state.faults.roll(kind, url_path):
            fraction = getattr(state.faults.config, f"{kind}_fraction")
            try:
                broken, sent, start = await send_broken(effective, path, fraction,
                                                        reset=kind == "reset")
            except BaseException:
                state.stats.download_finished(ip, url_path, 0, 0, size)
                raise
            state.stats.download_finished(ip, url_path, sent, start, size)
            return broken  # already prepared; its transport is closed
    if state.config.bandwidth and request.method == "GET":
        throttled, sent, start = await send_throttled(effective, path, state.config.bandwidth)
        state.stats.download_finished(ip, url_path, sent, start, size)
        return throttled
    return CountedFileResponse(path, effective, state, url_path, size)


class CountedFileResponse(web.FileResponse):
    """FileResponse (sendfile) that answers `effective` and reports the bytes it sent.

    aiohttp prepares it after the handler returns; the download counts as active until the
    body has been handed to the kernel.
    """

    def __init__(self, path: Path, effective: web.BaseRequest, state: SimState, url_path: str,
                 size: int) -> None:
        super().__init__(path)
        self._effective = effective
        # not `_state`: aiohttp's StreamResponse keeps its own mapping under that name
        self._sim, self._url_path, self._size = state, url_path, size

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        sent = start = 0
        try:
            writer = await super().prepare(self._effective)
            if self._effective.method == "GET" and self.status in (200, 206):
                sent, start = self.content_length or 0, range_start(self)
            return writer
        finally:
            self._sim.stats.download_finished(client_ip(request), self._url_path, sent, start,
                                                self._size)


async def change_file(state: SimState, url_path: str, path: Path) -> None:
    """Changing-file fault: new content and a new ETag for `url_path`."""
    before = path.stat().st_mtime_ns
    await state.store.change_file(url_path)
    after = path.stat()
    if after.st_mtime_ns == before:  # make sure the ETag and Last-Modified move
        bumped = before + 1_000_000_000
        os.utime(path, ns=(bumped, bumped))
    state.stats.file_changed(url_path)
    log.info("changing-file fault: %s rewritten", url_path)


def strip_range_if_needed(state: SimState, request: web.Request, url_path: str,
                          path: Path) -> web.Request:
    """Drop Range when an ETag If-Range no longer matches, or when Range is to be ignored."""
    if hdrs.RANGE not in request.headers:
        return request
    if_range = request.headers.get(hdrs.IF_RANGE, "").strip()
    stale = if_range.startswith(('"', "W/")) and if_range.strip('"') != etag_of(path)
    if stale or state.faults.roll("ignore_range", url_path):
        headers = request.headers.copy()
        headers.pop(hdrs.RANGE, None)
        headers.pop(hdrs.IF_RANGE, None)
        return request.clone(headers=headers)
    return request


def range_start(response: web.StreamResponse) -> int:
    """First byte offset of a 206 response (0 for a 200)."""
    content_range = response.headers.get(hdrs.CONTENT_RANGE, "")
    if response.status == 206 and content_range.startswith("bytes "):
        return int(content_range[6:].split("-", 1)[0])
    return 0


def requested_span(request: web.Request, size: int) -> tuple[int, int] | None:
    """(start, count) honouring a simple Range header; None if unsatisfiable."""
    try:
        rng = request.http_range
    except ValueError:
        return None
    start, stop = rng.start, rng.stop
    if start is None:
        return 0, size
    if start < 0:
        start = max(0, size + start)
        stop = size
    stop = size if stop is None else min(stop, size)
    if start >= size:
        return None
    return start, stop - start


async def prepare_stream(request: web.Request,
                         path: Path) -> tuple[web.StreamResponse, int, int]:
    """A prepared 200/206 StreamResponse for (a Range of) `path`: (response, start, count)."""
    size = path.stat().st_size
    span = requested_span(request, size)
    if span is None:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    start, count = span
    partial = hdrs.RANGE in request.headers
    response = web.StreamResponse(status=206 if partial else 200)
    response.content_length = count
    response.content_type = "application/octet-stream"
    response.etag = etag_of(path)
    response.last_modified = path.stat().st_mtime
    response.headers[hdrs.ACCEPT_RANGES] = "bytes"
    if partial:
        response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{start + count - 1}/{size}"
    await response.prepare(request)
    return response, start, count


async def send_broken(request: web.Request, path: Path, fraction: float,
                      reset: bool) -> tuple[web.StreamResponse, int, int]:
    """Promise the whole (ranged) body, send `fraction` of it, then break the connection.

    reset=True closes with a TCP RST (SO_LINGER 0); reset=False closes cleanly (FIN), so the
    client sees a truncated body. Returns (the response, bytes sent, first offset).
    """
    response, start, count = await prepare_stream(request, path)
    to_send = min(count - 1, int(count * fraction)) if count else 0
    with path.open("rb") as handle:
        handle.seek(start)
        remaining = to_send
        while remaining > 0:
            chunk = handle.read(min(CHUNK, remaining))
            await response.write(chunk)
            remaining -= len(chunk)
    await break_connection(request, reset)
    return response, to_send, start


async def send_throttled(request: web.Request, path: Path,
                         rate: float) -> tuple[web.StreamResponse, int, int]:
    """Send (a Range of) `path` at `rate` bytes per second; (response, bytes sent, start).

    Each block goes out when its last byte would have arrived at `rate`, so the response ends
    when the client has the last byte (a download is not "active" after the client has it
    all: pacing after the write held small files open for size/rate with the body already
    delivered, and refused the client's next request as a second connection). A client that
    goes away mid-body (a killed downloader) ends the response early; the bytes that did go
    out are still reported.
    """
    response, start, count = await prepare_stream(request, path)
    loop = asyncio.get_running_loop()
    began, sent = loop.time(), 0
    with contextlib.suppress(ConnectionError), path.open("rb") as handle:
        handle.seek(start)
        while sent < count:
            chunk = handle.read(min(CHUNK, count - sent))
            due = (sent + len(chunk)) / rate - (loop.time() - began)
            if due > 0:
                await asyncio.sleep(due)
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
    return response, sent, start


async def break_connection(request: web.Request, reset: bool) -> None:
    """Flush what was written, then close the transport (RST if `reset`)."""
    transport = request.transport
    if transport is None:
        return
    deadline = asyncio.get_running_loop().time() + 5.0
    while transport.get_write_buffer_size() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
    sock = transport.get_extra_info("socket")
    if reset and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if reset:
        transport.abort()
    else:
        transport.close()
