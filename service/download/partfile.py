"""The part file of a download as its body arrives: `PartWriter` appends blocks and feeds the
hash (in a worker thread for large bodies, inline for small ones, or holding a small fresh body
in memory until it is placed), and `write_part` writes a held body in one go.
"""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from service.download.paths import open_nofollow

WRITE_MODES = ("thread", "inline")  # aiofiles measured no faster than "thread" (bench/)
INLINE_BELOW = 1 << 20  # "auto": bodies smaller than this are written inline (no thread hop)
HOLD_BELOW = 1 << 20  # place=False: fresh bodies smaller than this are held in memory


class PartWriter:
    """Appends blocks to the part file (unbuffered) and feeds the hash. Modes: `thread`
    (write + hash in a worker thread while the loop receives the next batch), `inline`,
    `memory` (a fresh body kept in memory until `take`; what is not taken is written to the
    part file on `flush` and on exit, e.g. a body cut off)."""

    def __init__(self, part: Path, *, append: bool, hasher: Any, mode: str = "thread") -> None:
        if mode not in (*WRITE_MODES, "memory"):
            raise ValueError(f"write mode must be one of {WRITE_MODES}, got {mode!r}")
        self.part, self.mode, self._hasher, self._append = part, mode, hasher, append
        self._fh: io.FileIO | None = None
        self._pending: asyncio.Future[None] | None = None
        self._held: list[bytes] = []
        self.size = 0
        if mode == "memory" and append:
            raise ValueError("a memory PartWriter holds a fresh body only (no append)")

    async def __aenter__(self) -> PartWriter:
        if self.mode != "memory":
            self._fh = open_nofollow(self.part, "ab" if self._append else "wb")
            self.size = os.fstat(self._fh.fileno()).st_size
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            await self.flush()
        finally:
            if self._fh is not None:
                self._fh.close()

    def _write_sync(self, batch: list[bytes]) -> None:
        assert self._fh is not None
        # One buffer per batch: a write and a hash update per ~MiB instead of per 64 KiB block,
        # so the writer thread gives up and retakes the GIL rarely (it otherwise convoys with
        # the event loop thread that is receiving the next batch).
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        write_all(self._fh, data)
        if self._hasher is not None:
            self._hasher.update(data)

    async def write(self, batch: list[bytes]) -> int:
        """Write a batch of blocks; returns its size. In thread mode the write runs while the
        next batch is received (double buffering); its error surfaces on the next call."""
        if self.mode == "memory":
            self._held += batch
            if self._hasher is not None:
                for block in batch:
                    self._hasher.update(block)
        elif self.mode == "thread":
            await self.flush()
            self._pending = asyncio.get_running_loop().run_in_executor(
                None, self._write_sync, batch)
        else:
            self._write_sync(batch)
        nbytes = sum(map(len, batch))
        self.size += nbytes
        return nbytes

    async def flush(self) -> None:
        """Wait for the write in flight (the file is unbuffered: then the OS has every byte);
        in memory mode, write what is held (and not taken) to the part file."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending
        if self._held:
            held, self._held = self._held, []
            write_part(self.part, b"".join(held))

    def take(self) -> bytes:
        """Memory mode: the body received so far, which the caller now owns (not written)."""
        held, self._held = self._held, []
        return b"".join(held)


def write_part(part: Path, data: bytes) -> None:
    """Write `data` as the whole part file (never through a symlink at its name)."""
    with open_nofollow(part, "wb") as fh:
        write_all(fh, data)


def write_all(fh: io.FileIO, data: bytes) -> None:
    """Write every byte of ``data`` to an unbuffered file (a write may take only part)."""
    view = memoryview(data)
    while view:
        view = view[fh.write(view) or 0:]
