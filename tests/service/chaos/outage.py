"""Database outages for chaos tests (the database fixtures, both backends, come from
tests/service).

An outage is real, never mocked: on Postgres the worker reaches the server through a TCP proxy
that the test stops (every connection cut, new ones refused) and starts again; on SQLite another
connection holds the write lock (``BEGIN EXCLUSIVE``), so every write of the worker fails with
"database is locked" once the (shortened) busy timeout passes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy.engine import make_url

from service.db import engine

SQLITE_BUSY_MS = 200  # a write waits this long for the lock before it fails


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``stop`` cuts every connection and refuses
    new ones until ``start``."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer),
                             return_exceptions=True)
        self._writers -= {writer, up_writer}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


class DatabaseOutage:
    """``url``: what the worker connects to; ``begin()`` / ``end()`` take the database away
    and bring it back."""

    def __init__(self, url: str) -> None:
        self.db_url = url
        self.url = url
        self.sqlite = make_url(url).get_backend_name() == "sqlite"
        self._proxy: TcpProxy | None = None
        self._lock: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self.sqlite:
            return
        parsed = make_url(self.db_url)
        self._proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        await self._proxy.start()
        self.url = parsed.set(port=self._proxy.port).render_as_string(hide_password=False)

    async def begin(self) -> None:
        if self._proxy is not None:
            await self._proxy.stop()
            return
        path = make_url(self.db_url).database or ""
        self._lock = sqlite3.connect(path, timeout=30, isolation_level=None,
                                     check_same_thread=False)
        await asyncio.to_thread(self._lock.execute, "BEGIN EXCLUSIVE")

    async def end(self) -> None:
        if self._proxy is not None:
            await self._proxy.start()
            return
        assert self._lock is not None
        self._lock.execute("COMMIT")
        self._lock.close()
        self._lock = None

    async def close(self) -> None:
        if self._lock is not None:
            await self.end()
        if self._proxy is not None and self._proxy._server is not None:
            await self._proxy.stop()


@asynccontextmanager
async def database_outage(db_url: str,
                          monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DatabaseOutage]:
    """A DatabaseOutage on ``db_url`` (SQLite writes give up after SQLITE_BUSY_MS)."""
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", SQLITE_BUSY_MS)
    control = DatabaseOutage(db_url)
    await control.open()
    try:
        yield control
    finally:
        await control.close()
