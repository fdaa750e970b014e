"""Tar archives and FITS files built in memory, for the unpacking tests."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence

import numpy as np
from astropy.io import fits


def fits_bytes(seed: int) -> bytes:
    """A small valid FITS file whose data depends on ``seed``."""
    data = np.random.default_rng(seed).integers(0, 1000, (40, 50), dtype=np.int16)
    out = io.BytesIO()
    fits.PrimaryHDU(data).writeto(out)
    return out.getvalue()


def make_tar(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT,
             extra: Sequence[tarfile.TarInfo] = ()) -> bytes:
    """A tar of regular files (in order), then `extra` headers (links, directories)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buffer.getvalue()
