"""Image and movie exports (protocol jpg, mpg, mp4), as JSOC's jsoc_export_as_images makes them.

drms sends ``protocol=jpg,CT=grey.sao,scaling=MINMAX,size=1[,min=…,max=…]`` (mpg/mp4 alike).
The export holds one JPEG per record, rendered from the record's first exported segment, and
for mpg/mp4 one movie of those frames, listed first in the index as "movie of the following
data" (drms blanks that row's record). Images are named ``<series>.<time key:A>[.<other prime
keys>].jpg``, the movie ``<series>.<mpg|mp4>``; `keywords` says "<protocol> files". Movies are
stand-ins: a valid container header (MP4 `ftyp` box, MPEG-PS pack header) followed by the
frames' JPEG bytes, since no video encoder is bundled.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from jsocsim.fitsgen import FileRecipe, image_shape, solar_image

IMAGE_PROTOCOLS = ("jpg", "mpg", "mp4")
SCALINGS = ("MINMAX", "MINMAXGIVEN", "LOG", "SQRT", "MAG")  # drms's names (mag: symmetric)
MOVIE_ROW = "movie of the following data"


class ImageSpecError(ValueError):
    """A bad image protocol option; the message says what is accepted."""


@dataclass(frozen=True)
class ImageSpec:
    """The image options of an export request (`protocol=jpg,CT=…,scaling=…,size=…`)."""

    protocol: str
    palette: str = "grey.sao"
    scaling: str = "MINMAX"
    size: int = 1  # reduction factor: every size-th pixel in each direction
    vmin: float | None = None
    vmax: float | None = None

    @classmethod
    def parse(cls, base: str, options: str) -> ImageSpec:
        """Options after the protocol name: comma-separated NAME=VALUE pairs."""
        values: dict[str, str] = {}
        for part in (p.strip() for p in options.split(",") if p.strip()):
            name, sep, value = part.partition("=")
            if not sep or not value.strip():
                raise ImageSpecError(f"image option '{part}' must be NAME=VALUE (CT, scaling, "
                                     "size, min, max)")
            values[name.strip().lower()] = value.strip()
        scaling = values.get("scaling", "MINMAX").upper()
        if scaling not in SCALINGS:
            raise ImageSpecError(f"scaling={scaling} is not known; use {', '.join(SCALINGS)}")
        try:
            size = int(values.get("size", "1"))
            vmin = float(values["min"]) if "min" in values else None
            vmax = float(values["max"]) if "max" in values else None
        except ValueError as exc:
            raise ImageSpecError(f"image size must be an integer and min/max numbers ({exc})") \
                from None
        if size < 1:
            raise ImageSpecError(f"image size must be >= 1, got {size}")
        return cls(base, values.get("ct", "grey.sao"), scaling, size, vmin, vmax)

    @property
    def movie(self) -> bool:
        return self.protocol in ("mpg", "mp4")

    def text(self) -> str:
        """A canonical form (duplicate detection)."""
        return (f"{self.protocol},CT={self.palette},scaling={self.scaling},size={self.size},"
                f"min={self.vmin},max={self.vmax}")


def _scaled(image: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """8-bit grey levels of `image` under the request's scaling and min/max."""
    data = image.astype(np.float64)[:: spec.size, :: spec.size]
    lo = spec.vmin if spec.vmin is not None else float(np.nanmin(data))
    hi = spec.vmax if spec.vmax is not None else float(np.nanmax(data))
    if spec.scaling == "MAG":
        hi = max(abs(lo), abs(hi))
        lo = -hi
    span = max(hi - lo, 1e-12)
    unit = np.clip((data - lo) / span, 0.0, 1.0)
    if spec.scaling == "LOG":
        unit = np.log10(1.0 + 9.0 * unit)
    elif spec.scaling == "SQRT":
        unit = np.sqrt(unit)
    return (unit * 255.0 + 0.5).astype(np.uint8)


def jpeg_bytes(seed: int, nbytes: int, spec: ImageSpec) -> bytes:
    """A JPEG of the seeded solar image that the record's FITS file would hold."""
    image = solar_image(seed, image_shape(nbytes, 4), np.dtype(np.float32))
    buffer = io.BytesIO()
    Image.fromarray(_scaled(image, spec), mode="L").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def movie_bytes(frames: list[bytes], protocol: str) -> bytes:
    """A stand-in movie: a container header, then the frames."""
    payload = b"".join(frames)
    if protocol == "mp4":
        ftyp = b"ftypisom" + b"\x00\x00\x02\x00" + b"isomiso2mp41"
        head = (8 + len(ftyp)).to_bytes(4, "big") + ftyp
        return head + (8 + len(payload)).to_bytes(4, "big") + b"free" + payload
    return b"\x00\x00\x01\xba\x44\x00\x04\x00\x04\x01\x01\x89\xc3\xf8" + payload


@dataclass(frozen=True)
class ImageRecipe(FileRecipe):
    """FileRecipe of an exported image or movie (`frames`: the movie's frame recipes)."""

    spec: Any = None  # ImageSpec
    frames: tuple[Any, ...] = ()

    def is_fits(self) -> bool:
        return False

    def render(self) -> bytes:
        if self.spec.movie and self.frames:
            return movie_bytes([f.render() for f in self.frames], self.spec.protocol)
        return jpeg_bytes(self.seed + self.variant, self.nbytes, self.spec)


def image_name(record: Any, series_name: str) -> str:
    """<series>.<time key:A>[.<other prime keys>].jpg (unique per record)."""
    parts = [series_name]
    for key in record.series.primekeys:
        text = key.display(record.prime[key.name])
        parts.append(text.replace(".", "").replace(":", "") if key.is_time else text)
    return ".".join(parts) + ".jpg"
