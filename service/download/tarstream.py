"""Tar stream parsing for `service.download.untar`: 512-byte ustar/POSIX/GNU headers, GNU long
names (`L`), PAX `x` records (`path`, `size`), and a response body read as tar offsets.

Nothing here writes files; `untar` decides what to do with each member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp

from service.download.errors import DownloadError
from service.download.fetch import DEFAULT_CHUNK, salvage_buffered
from service.download.paths import check_relative_name

BLOCK = 512
MAX_META_BYTES = 1 << 20  # long-name and PAX records: far beyond any real name
ZERO_BLOCK = bytes(BLOCK)


class BadHeader(DownloadError):
    """The bytes at a header position are not a tar header."""


class Truncated(DownloadError):
    """A clean EOF inside a header or a member."""


@dataclass(frozen=True)
class TarHeader:
    """What a member header says (after long-name / PAX overrides)."""

    name: str
    size: int
    kind: bytes
    linkname: str


class ByteCounter(Protocol):
    """Whatever counts the body bytes received (kept across attempts)."""

    received: int


class TarBody:
    """The response body, tracked as tar offsets. Bytes aiohttp had buffered when the
    connection broke are still handed out before the error is raised."""

    def __init__(self, content: aiohttp.StreamReader, offset: int, counter: ByteCounter) -> None:
        self._content, self._counter = content, counter
        self.offset = self.header_offset = offset
        self._salvaged: list[bytes] = []
        self._error: BaseException | None = None

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes; b"" at a clean EOF."""
        if self._salvaged:
            data = self._salvaged[0][:n]
            self._salvaged[0] = self._salvaged[0][n:]
            if not self._salvaged[0]:
                self._salvaged.pop(0)
        elif self._error is not None:
            raise self._error
        else:
            try:
                data = await self._content.read(n)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                self._error = exc
                self._salvaged = [c for c in salvage_buffered(self._content) if c]
                if not self._salvaged:
                    raise
                return await self.read(n)
        self.offset += len(data)
        self._counter.received += len(data)
        return data

    async def read_exact(self, n: int) -> bytes:
        """`n` bytes, or fewer only when the body ends."""
        parts, got = [], 0
        while got < n:
            data = await self.read(n - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def skip(self, n: int) -> None:
        """Discard `n` bytes; Truncated if the body ends first."""
        while n:
            data = await self.read(min(n, DEFAULT_CHUNK))
            if not data:
                raise Truncated
            n -= len(data)


def padded(size: int) -> int:
    """A member's data size rounded up to whole blocks."""
    return -(-size // BLOCK) * BLOCK


def parse_number(field_: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (high bit of the first byte)."""
    if field_[0] in (0x80, 0xFF):
        value = int.from_bytes(field_[1:], "big")
        return value - 256 ** (len(field_) - 1) if field_[0] == 0xFF else value
    text = field_.split(b"\0", 1)[0].strip(b" ")
    return int(text, 8) if text else 0


def _text(field_: bytes) -> str:
    return field_.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def parse_header(block: bytes, offset: int) -> TarHeader:
    """Name, size, type and link name of a 512-byte header; BadHeader if it is not one."""
    try:
        stored = parse_number(block[148:156])
        size = parse_number(block[124:136])
    except ValueError:
        raise BadHeader(f"no tar header at byte {offset} (bad number field)") from None
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != computed or size < 0:
        raise BadHeader(f"no tar header at byte {offset} (checksum {stored} != {computed})")
    name = _text(block[0:100])
    if block[257:263] == b"ustar\0" and block[345] != 0:  # POSIX ustar: prefix field
        name = _text(block[345:500]) + "/" + name
    return TarHeader(name, size, block[156:157], _text(block[157:257]))


async def read_meta(body: TarBody, header: TarHeader) -> bytes:
    """The data of a long-name or PAX member (bounded in size)."""
    if header.size > MAX_META_BYTES:
        raise BadHeader(f"tar {header.kind.decode()} record at byte {body.header_offset} is "
                        f"{header.size} bytes (limit {MAX_META_BYTES})")
    data = await body.read_exact(header.size)
    if len(data) < header.size:
        raise Truncated
    await body.skip(padded(header.size) - header.size)
    return data


def meta_record(kind: bytes, data: bytes) -> dict[str, str]:
    """Overrides for the next member: GNU `L` long name, PAX `x` path/size; others ignored."""
    if kind == b"L":
        return {"path": data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")}
    if kind != b"x":
        return {}
    found: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        length = int(data[pos:space]) if data[pos:space].isdigit() else 0
        if length <= space - pos or pos + length > len(data):
            raise BadHeader(f"malformed PAX record at {pos}: {data[pos:pos + 40]!r}")
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        if key == b"size" and not value.isdigit():
            raise BadHeader(f"PAX size {value!r} is not a number")
        if key in (b"path", b"size"):
            found[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return found


def member_name(header: TarHeader) -> str | None:
    """The member name without leading "./" (None for the archive's "." directory);
    UnsafePathError for absolute names, `..` components and other unusable names."""
    name = header.name
    while name.startswith("./"):
        name = name[2:]
    if header.kind == b"5":
        name = name.rstrip("/")
    if name in ("", "."):
        return None
    check_relative_name(name)
    return name
