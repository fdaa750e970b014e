"""A hostile JSOC stand-in for chaos tests: a raw HTTP/1.1 server in front of the emulator that
forwards every GET and garbles the replies a test chooses: jsoc_fetch JSON (bad file names,
wrong types) and file bodies (a Content-Length larger or smaller than the body, or negative).
It writes the response bytes itself, so it can send headers no HTTP library would.

``in_thread`` serves it (or any async context manager) from a background event loop, for the
synchronous end-to-end tests that drive a real daemon process.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp

T = TypeVar("T")
ReplyTamper = Callable[[str, dict[str, Any]], dict[str, Any] | None]
"""(op, decoded jsoc_fetch reply) -> the reply to send instead, or None to pass it through."""
LengthTamper = Callable[[str, int, int], str | None]
"""(url path, HTTP status, body length) -> the Content-Length to declare instead, or None."""
PASSED_HEADERS = ("Content-Type", "Content-Range", "ETag", "Last-Modified", "Accept-Ranges",
                  "Retry-After")
REQUEST_HEADERS = ("Range", "If-Range", "Accept-Encoding")
READ_TIMEOUT = 30.0


class HostileJsoc:
    """``async with HostileJsoc(upstream, replies, lengths) as base_url``: forwards GETs to
    ``upstream`` (one request per connection, ``Connection: close``) and applies the tampers."""

    def __init__(self, upstream: str, replies: ReplyTamper | None = None,
                 lengths: LengthTamper | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.replies = replies
        self.lengths = lengths
        self._http: aiohttp.ClientSession | None = None
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._http = aiohttp.ClientSession(auto_decompress=False)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._http is not None:
            await self._http.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            target, headers = parse_head(head)
            status, out, body = await self._forward(target, headers)
            declared, body = self._tamper(target, status, body)
            writer.write(response_bytes(status, out, declared, body))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                aiohttp.ClientError):
            pass  # the client went away, or the emulator did (its faults): drop the connection
        finally:
            writer.close()

    async def _forward(self, target: str, headers: dict[str, str]) -> tuple[
            int, dict[str, str], bytes]:
        assert self._http is not None
        passed = {k: v for k, v in headers.items() if k in REQUEST_HEADERS}
        async with self._http.get(self.upstream + target, headers=passed) as up:
            body = await up.read()
            return up.status, {k: v for k, v in up.headers.items() if k in PASSED_HEADERS}, body

    def _tamper(self, target: str, status: int, body: bytes) -> tuple[str, bytes]:
        """The Content-Length to declare and the body to send."""
        url = urlsplit(target)
        if url.path.endswith("/jsoc_fetch"):
            if status == 200 and self.replies is not None:
                op = parse_qs(url.query).get("op", [""])[0]
                changed = self.replies(op, json.loads(body))
                if changed is not None:
                    body = json.dumps(changed).encode()
        elif not url.path.startswith("/cgi-bin/") and self.lengths is not None and (
                declared := self.lengths(url.path, status, len(body))) is not None:
            return declared, body  # a file
        return str(len(body)), body


def parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The request target and headers of a request head (only GET is forwarded)."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    if method != "GET":
        raise OSError(f"the stand-in forwards only GET, not {method}")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return target, headers


def response_bytes(status: int, headers: dict[str, str], declared: str, body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers.items()),
             f"Content-Length: {declared}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


@contextmanager
def in_thread(manager: AbstractAsyncContextManager[T], timeout: float = 30) -> Iterator[T]:
    """Enter ``manager`` on an event loop of its own, in a daemon thread; exit it (and stop
    the loop) when the block ends, whatever happens."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        value = asyncio.run_coroutine_threadsafe(manager.__aenter__(), loop).result(timeout)
        try:
            yield value
        finally:
            asyncio.run_coroutine_threadsafe(
                manager.__aexit__(None, None, None), loop).result(timeout)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()
