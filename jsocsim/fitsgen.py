"""Deterministic file content: FITS images (astropy) and generic segment files.

The same (seed, series, record, segment, file, variant) always gives the same bytes. Image data
are a smooth limb-darkened disk plus seeded noise, sized to about `nbytes` of pixels, so Rice
compression behaves roughly as on real data. Headers of `fits`-protocol files carry the record's
keyword values (the values rs_list shows); `as-is` files, like the files stored in SUMS, carry
only structural cards.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

# DRMS segment type -> numpy dtype of the generated pixels
_DTYPES: dict[str, np.dtype[Any]] = {
    "char": np.dtype(np.uint8),
    "short": np.dtype(np.int16),
    "int": np.dtype(np.int32),
    "longlong": np.dtype(np.int32),
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float32),
}
# per-segment DRMS keywords that JSOC turns into FITS structure instead of header cards
_STRUCTURAL_KEYWORD = re.compile(r"^(cparms_sg\d+|.+_bzero|.+_bscale)$", re.IGNORECASE)
_FITS_RESERVED = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION",
                  "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "BLANK", "END", "COMMENT", "HISTORY"}
_SHORT_NAME = re.compile(r"^[A-Z0-9_-]{1,8}$")


def content_seed(*parts: object) -> int:
    """A 63-bit seed from the parts (stable across runs and platforms)."""
    text = "\x1f".join(map(str, parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def pixel_dtype(segment_type: str) -> np.dtype[Any]:
    """Numpy dtype used for a DRMS segment type (unknown types give int32)."""
    return _DTYPES.get(segment_type.lower(), np.dtype(np.int32))


def image_shape(nbytes: int, itemsize: int) -> tuple[int, int]:
    """A square shape whose pixel bytes come close to `nbytes` (at least 8x8)."""
    side = max(8, int(math.sqrt(max(nbytes, 1) / itemsize)))
    return side, side


def solar_image(seed: int, shape: tuple[int, int], dtype: np.dtype[Any]) -> np.ndarray:
    """Seeded image: a limb-darkened disk with noise, in `dtype`."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    y = (np.arange(ny, dtype=np.float32) - (ny - 1) / 2) / (0.42 * ny)
    x = (np.arange(nx, dtype=np.float32) - (nx - 1) / 2) / (0.42 * nx)
    r2 = y[:, None] ** 2 + x[None, :] ** 2
    disk = np.where(r2 < 1.0, np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)), 0.0).astype(np.float32)
    level = float(rng.integers(500, 3000))
    noise = rng.integers(-16, 17, size=shape, dtype=np.int16).astype(np.float32)
    image = level * (0.3 + 0.7 * disk) * (r2 < 1.0) + noise
    if dtype.kind == "u":
        return (image / 16.0).clip(0, 255).astype(dtype)
    return image.astype(dtype)


def header_cards(keywords: Mapping[str, Any]) -> fits.Header:
    """FITS header from DRMS keyword values (names: `__` -> `-`; long names as HIERARCH).

    Missing values (None, NaN) and the per-segment structural keywords are left out, as JSOC's
    FITS export does.
    """
    header = fits.Header()
    for name, value in keywords.items():
        if value is None or _STRUCTURAL_KEYWORD.match(name):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if isinstance(value, np.generic):
            value = value.item()
        fits_name = fits_keyword_name(name)
        if fits_name in _FITS_RESERVED:
            continue
        header[fits_name] = value
    return header


def fits_keyword_name(drms_name: str) -> str:
    """The FITS card name JSOC's export uses for a DRMS keyword name."""
    name = drms_name.replace("__", "-").upper()
    return name if _SHORT_NAME.match(name) else f"HIERARCH {name}"


def fits_bytes(data: np.ndarray, header: fits.Header | None, compress: bool) -> bytes:
    """A complete FITS file: Rice-compressed extension after an empty primary, or a plain image."""
    if compress:
        hdu = fits.CompImageHDU(data=data, header=header, compression_type="RICE_1",
                                quantize_level=16.0, dither_seed=1)
        hdul = fits.HDUList([fits.PrimaryHDU(), hdu])
    else:
        hdul = fits.HDUList([fits.PrimaryHDU(data=data, header=header)])
    buffer = io.BytesIO()
    hdul.writeto(buffer, output_verify="silentfix")
    return buffer.getvalue()


def text_file_bytes(seed: int, name: str, nbytes: int) -> bytes:
    """A generic (non-FITS) segment file: rows of seeded numbers, about `nbytes` long."""
    rng = np.random.default_rng(seed)
    rows = max(1, nbytes // 48)
    table = rng.normal(0.0, 1.0, size=(rows, 3))
    lines = [f"# {name}\n"]
    lines += [f"{i:6d} {a: .8e} {b: .8e} {c: .8e}\n" for i, (a, b, c) in enumerate(table)]
    return "".join(lines).encode("ascii")


@dataclass(frozen=True)
class FileRecipe:
    """Everything that determines one file's bytes (used to generate and to re-generate)."""

    seed: int  # the record/segment content seed
    filename: str  # the stored (or export) file name; decides FITS vs text
    segment_type: str  # DRMS segment type (short, int, float, ...)
    nbytes: int  # target pixel bytes of the unprocessed image
    compress: bool  # Rice-compressed FITS
    keywords: Mapping[str, Any] | None = None  # header keywords (None: structural cards only)
    transform: Any = None  # processing.Transform applied to the image, or None
    variant: int = 0  # >0: changed content (changing-file fault)

    def is_fits(self) -> bool:
        """True when the file is a FITS file (by its name)."""
        return self.filename.lower().endswith((".fits", ".fts", ".fit"))

    def render(self) -> bytes:
        """The file's bytes."""
        seed = self.seed if self.variant == 0 else content_seed(self.seed, "variant", self.variant)
        if not self.is_fits():
            return text_file_bytes(seed, self.filename, self.nbytes)
        dtype = pixel_dtype(self.segment_type)
        image = solar_image(seed, image_shape(self.nbytes, dtype.itemsize), dtype)
        if self.transform is not None:
            image = self.transform.apply(image)
        header = header_cards(self.keywords) if self.keywords is not None else None
        return fits_bytes(image, header, self.compress)
