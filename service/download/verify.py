"""Verification of downloaded files (or of a small body held in memory before it is written):
size, cheap FITS structure check, sha256.

The FITS check reads only the header blocks (seeking over the data), so it costs a few KiB of
I/O per HDU however big the file is. It checks: the first card is `SIMPLE = T`, every header
ends with END, each HDU's data length follows from BITPIX/NAXISn (and PCOUNT/GCOUNT for
extensions), padded to 2880-byte blocks, and the HDUs cover the file exactly.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from service.download.errors import DownloadError

BLOCK = 2880
CARD = 80
MAX_HEADER_BLOCKS = 1000  # 80,000 cards: far beyond any real header
FITS_SUFFIXES = (".fits", ".fts", ".fit")
_VALID_BITPIX = {8, 16, 32, 64, -32, -64}
_STRUCTURE_KEYS = frozenset({"BITPIX", "GROUPS", "PCOUNT", "GCOUNT", "XTENSION"})  # + NAXISn


class VerificationError(DownloadError, ValueError):
    """A downloaded file failed a check; the message says which and why."""


@dataclass(frozen=True)
class HduInfo:
    """Where one HDU sits in the file."""

    kind: str  # "PRIMARY" or the XTENSION value (IMAGE, BINTABLE, TABLE …)
    header_offset: int
    data_offset: int
    data_bytes: int  # unpadded


def check_size(path: Path, expected: int | None) -> int:
    """The file size; raise VerificationError if `expected` is given and differs."""
    size = os.stat(path).st_size
    if expected is not None and size != expected:
        raise VerificationError(f"{path.name}: size is {size} bytes, expected {expected}")
    return size


def _card_value(card: bytes) -> str:
    """The value field of a `KEY = value / comment` card, stripped (strings keep no quotes)."""
    text = card[10:].decode("ascii", "replace")
    if text.lstrip().startswith("'"):
        body = text.lstrip()[1:]
        return body.split("'", 1)[0].rstrip()
    return text.split("/", 1)[0].strip()


def _read_header(fh: BinaryIO, name: str, offset: int) -> tuple[dict[str, str], int]:
    """Parse the header at `offset`: (the structural keywords seen, offset after it)."""
    cards: dict[str, str] = {}
    for block_no in range(MAX_HEADER_BLOCKS):
        block = fh.read(BLOCK)
        if len(block) != BLOCK:
            raise VerificationError(
                f"{name}: header at byte {offset} is cut off (file not a multiple of {BLOCK} "
                f"bytes or END card missing)")
        for i in range(0, BLOCK, CARD):
            card = block[i:i + CARD]
            key = card[:8].decode("ascii", "replace").rstrip()
            if key == "END":
                return cards, offset + (block_no + 1) * BLOCK
            if key in ("SIMPLE", "XTENSION") and (block_no or i):
                at = offset + block_no * BLOCK + i
                raise VerificationError(f"{name}: header at byte {offset} has no END card before "
                                        f"the next header ({key} at byte {at})")
            if card[8:10] == b"= " and key not in cards and _structural(key):
                cards[key] = _card_value(card)
    raise VerificationError(f"{name}: no END card in the first {MAX_HEADER_BLOCKS} header blocks")


def _structural(key: str) -> bool:
    """A keyword the structure check reads (the others' values are not parsed)."""
    return key in _STRUCTURE_KEYS or key.startswith("NAXIS")


def _int_card(cards: dict[str, str], key: str, name: str, default: int | None = None) -> int:
    raw = cards.get(key)
    if raw is None:
        if default is not None:
            return default
        raise VerificationError(f"{name}: mandatory keyword {key} is missing")
    try:
        return int(raw)
    except ValueError:
        raise VerificationError(f"{name}: keyword {key} is not an integer: {raw!r}") from None


def _data_bytes(cards: dict[str, str], name: str, primary: bool) -> int:
    """Unpadded data length from BITPIX, NAXISn, PCOUNT, GCOUNT (FITS standard §4.4.1)."""
    bitpix = _int_card(cards, "BITPIX", name)
    if bitpix not in _VALID_BITPIX:
        raise VerificationError(f"{name}: BITPIX {bitpix} is not one of {sorted(_VALID_BITPIX)}")
    naxis = _int_card(cards, "NAXIS", name)
    if not 0 <= naxis <= 999:
        raise VerificationError(f"{name}: NAXIS {naxis} is outside 0..999")
    if naxis == 0:
        return 0
    axes = [_int_card(cards, f"NAXIS{i}", name) for i in range(1, naxis + 1)]
    if any(a < 0 for a in axes):
        raise VerificationError(f"{name}: negative axis length in {axes}")
    groups = primary and cards.get("GROUPS") == "T" and axes[0] == 0
    if primary and not groups:
        pcount, gcount = 0, 1
    else:
        pcount = _int_card(cards, "PCOUNT", name, 0)
        gcount = _int_card(cards, "GCOUNT", name, 1)
    elements = 1
    for length in axes[1:] if groups else axes:
        elements *= length
    return abs(bitpix) // 8 * gcount * (pcount + elements)


def check_fits(path: Path) -> list[HduInfo]:
    """Walk every HDU of a FITS file; raise VerificationError at the first inconsistency."""
    size = os.stat(path).st_size
    _check_fits_size(size, path.name)
    with open(path, "rb") as fh:
        return _walk_hdus(fh, size, path.name)


def check_fits_bytes(data: bytes, name: str) -> list[HduInfo]:
    """`check_fits` for a body held in memory (`name` for the messages)."""
    _check_fits_size(len(data), name)
    return _walk_hdus(io.BytesIO(data), len(data), name)


def _check_fits_size(size: int, name: str) -> None:
    if size == 0 or size % BLOCK:
        raise VerificationError(f"{name}: size {size} is not a positive multiple of {BLOCK}")


def _walk_hdus(fh: BinaryIO, size: int, name: str) -> list[HduInfo]:
    first = fh.read(CARD)
    if first[:8] != b"SIMPLE  " or first[8:10] != b"= " or _card_value(first) != "T":
        raise VerificationError(f"{name}: first card is not 'SIMPLE = T' (not a FITS file)")
    hdus: list[HduInfo] = []
    offset = 0
    while offset < size:
        primary = not hdus
        fh.seek(offset)
        if not primary and fh.read(8) != b"XTENSION":
            raise VerificationError(f"{name}: bytes after HDU {len(hdus) - 1} at {offset} do "
                                    "not start an XTENSION header")
        fh.seek(offset)
        cards, data_offset = _read_header(fh, name, offset)
        data = _data_bytes(cards, f"{name} HDU {len(hdus)}", primary)
        kind = "PRIMARY" if primary else cards["XTENSION"]
        hdus.append(HduInfo(kind, offset, data_offset, data))
        offset = data_offset + -(-data // BLOCK) * BLOCK
        if offset > size:
            raise VerificationError(
                f"{name}: HDU {len(hdus) - 1} needs {offset} bytes but the file has {size} "
                "(truncated)")
    return hdus


def is_fits_name(name: str) -> bool:
    return name.lower().endswith(FITS_SUFFIXES)


def verify_file(path: Path, *, expected_size: int | None = None, fits: bool | None = None,
                display_name: str | None = None) -> None:
    """Size check, plus the FITS check when `fits` is True (or None and the name says FITS)."""
    check_size(path, expected_size)
    if fits or (fits is None and is_fits_name(display_name or path.name)):
        check_fits(path)


def verify_body(data: bytes, name: str, *, expected_size: int | None = None,
                fits: bool | None = None) -> None:
    """`verify_file` for a body held in memory, before it is written (`name`: its file's)."""
    if expected_size is not None and len(data) != expected_size:
        raise VerificationError(f"{name}: size is {len(data)} bytes, expected {expected_size}")
    if fits or (fits is None and is_fits_name(name)):
        check_fits_bytes(data, name)


def sha256_file(path: Path, chunk_size: int = 1 << 20, limit: int | None = None) -> hashlib._Hash:
    """A sha256 object fed with the file's first `limit` bytes (all if None)."""
    digest = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as fh:
        while remaining is None or remaining > 0:
            block = fh.read(chunk_size if remaining is None else min(chunk_size, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest
