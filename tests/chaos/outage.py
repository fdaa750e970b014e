"""Database outages for chaos tests (the database fixtures, both backends, come from
tests/service/conftest.py through tests/chaos/conftest.py).

An outage is real, never mocked: on Postgres the worker reaches the server through a TCP proxy
that the test stops (every connection cut, new ones refused) and starts again; on SQLite another
process holds the write lock (``BEGIN EXCLUSIVE``) for longer than the (shortened) busy
timeout, so every write of the worker fails with "database is locked" while reads go on. (A
read-only file or directory, the other way SQLite becomes unwritable, does not bind root,
which these tests may run as.)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy.engine import make_url

from service.db import engine

SQLITE_BUSY_MS = 20  # a write waits this long for the lock before it fails
# holds the write lock of the database file argv[1] until its stdin has a line or closes
LOCK_HOLDER = """
import sqlite3, sys
lock = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
lock.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
lock.execute("COMMIT")
"""


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
        self._lock: asyncio.subprocess.Process | None = None

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
        self._lock = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCK_HOLDER, path, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        assert self._lock.stdout is not None
        line = await asyncio.wait_for(self._lock.stdout.readline(), 60)
        assert line == b"locked\n", f"the lock holder did not lock the database: {line!r}"

    async def end(self) -> None:
        if self._proxy is not None:
            await self._proxy.start()
            return
        assert self._lock is not None and self._lock.stdin is not None
        self._lock.stdin.close()  # it commits and exits
        code = await asyncio.wait_for(self._lock.wait(), 60)
        assert code == 0, f"the lock holder exited with {code}"
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
