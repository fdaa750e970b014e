"""Export processing steps (`process=n=<n>|step,k=v,…`): im_patch cutouts and rebinning.

As on JSOC, processed records belong to the `<series>_mod` series and carry smaller images. The
emulator implements `im_patch` (a sub-image), `rebin` and `resize` (boxcar rescaling) and
passes the `aia_scale_*` steps through unchanged; `Maproj` and `HmiB2ptr` are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ALLOWED_STEPS = ("im_patch", "resize", "rebin", "aia_scale_aialev1", "aia_scale_orig",
                 "aia_scale_other", "Maproj", "HmiB2ptr")
UNSUPPORTED_STEPS = ("Maproj", "HmiB2ptr")
_DEFAULT_FULL_SIDE = 4096
_DEFAULT_CDELT = 0.6  # arcsec per pixel when the record has no CDELT1


class ProcessingError(ValueError):
    """A malformed or unsupported processing request (the message says what is accepted)."""


@dataclass(frozen=True)
class ProcessStep:
    """One processing step and its arguments, in the order given."""

    name: str
    args: tuple[tuple[str, str], ...] = ()

    def arg(self, key: str, default: str | None = None) -> str | None:
        return dict(self.args).get(key, default)

    def text(self) -> str:
        return ",".join([self.name, *(f"{k}={v}" for k, v in self.args)])


@dataclass(frozen=True)
class ProcessSpec:
    """The parsed `process` value: record limit n (0 = none) and the steps."""

    n: int = 0
    steps: tuple[ProcessStep, ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        """True when there is at least one processing step."""
        return bool(self.steps)

    def text(self) -> str:
        """Canonical text (`n=<n>|step,k=v|…`), used in the duplicate hash."""
        return "|".join([f"n={self.n}", *(step.text() for step in self.steps)])


def parse_process(value: str) -> ProcessSpec:
    """Parse `n=<int>[|step,k=v,…]…`; an empty value means no limit and no steps."""
    parts = [p for p in value.strip().split("|")]
    head = parts[0].strip()
    if head.startswith("n="):
        head = head[2:]
    try:
        n = int(head) if head else 0
    except ValueError:
        raise ProcessingError(
            f"Bad process value '{value}': it must start with n=<integer record limit>, "
            "e.g. n=0|rebin,method=boxcar,scale=0.25") from None
    steps = tuple(_parse_step(text) for text in parts[1:] if text.strip())
    return ProcessSpec(n=n, steps=steps)


def _parse_step(text: str) -> ProcessStep:
    name, *pairs = [p.strip() for p in text.split(",")]
    if name not in ALLOWED_STEPS:
        raise ProcessingError(
            f"Processing step '{name}' is not allowed; accepted: {', '.join(ALLOWED_STEPS)}")
    if name in UNSUPPORTED_STEPS:
        raise ProcessingError(f"Processing step '{name}' is not supported by this emulator; "
                              "supported: im_patch, rebin, resize, aia_scale_*")
    args = []
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise ProcessingError(f"Bad argument '{pair}' for {name}: expected key=value")
        args.append((key.strip(), val.strip()))
    return ProcessStep(name=name, args=tuple(args))


def spec_from_params(params: Mapping[str, str]) -> ProcessSpec:
    """The ProcessSpec of an exp_request, from whichever encoding the client used.

    Accepted: `process=n=<v>` (name `process`, value `n=…`), `process%3Dn=<v>` (name
    `process=n`), and the newer `processing=<JSON>` + `max_recs=<n>`, which take precedence.
    """
    if params.get("processing"):
        return _spec_from_json(params["processing"], params.get("max_recs", "0"))
    if "process=n" in params:
        return parse_process("n=" + params["process=n"])
    if params.get("process"):
        return parse_process(params["process"])
    if params.get("max_recs"):
        return parse_process("n=" + params["max_recs"])
    return ProcessSpec()


def _spec_from_json(text: str, max_recs: str) -> ProcessSpec:
    try:
        steps = json.loads(text)
        n = int(max_recs or 0)
    except (ValueError, TypeError):
        raise ProcessingError("processing must be a JSON object {step: {arg: value}} and "
                              "max_recs an integer") from None
    if not isinstance(steps, dict) or not all(isinstance(v, dict) for v in steps.values()):
        raise ProcessingError("processing must be a JSON object {step: {arg: value}}")
    body = "|".join(",".join([name] + [f"{k}={v}" for k, v in args.items()])
                    for name, args in steps.items())
    return parse_process(f"n={n}" + (f"|{body}" if body else ""))


@dataclass(frozen=True)
class Transform:
    """Image changes of the processing steps, in fractions of the full-resolution image."""

    y0: float = 0.0  # cutout origin and extent (fractions of the full image)
    x0: float = 0.0
    height: float = 1.0
    width: float = 1.0
    scale: float = 1.0  # rebin factor applied after the cutout

    def size_ratio(self) -> float:
        """Output bytes / input bytes (for the export size estimate)."""
        return self.height * self.width * self.scale**2

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The processed image."""
        ny, nx = image.shape
        y0, x0 = round(self.y0 * ny), round(self.x0 * nx)
        h = max(1, round(self.height * ny))
        w = max(1, round(self.width * nx))
        y0, x0 = min(max(y0, 0), ny - 1), min(max(x0, 0), nx - 1)
        patch = image[y0:y0 + h, x0:x0 + w]
        return rebin(patch, self.scale) if self.scale != 1.0 else patch


def rebin(image: np.ndarray, scale: float) -> np.ndarray:
    """Boxcar rescale by `scale` (<1 shrinks): block means over nearly equal blocks."""
    ny, nx = image.shape
    my, mx = max(1, int(ny * scale)), max(1, int(nx * scale))
    rows = np.floor(np.arange(my) * ny / my).astype(int)
    cols = np.floor(np.arange(mx) * nx / mx).astype(int)
    sums = np.add.reduceat(np.add.reduceat(image.astype(np.float64), rows, axis=0), cols, axis=1)
    counts = np.outer(np.diff(np.append(rows, ny)), np.diff(np.append(cols, nx)))
    means: np.ndarray = sums / counts
    return means.astype(image.dtype)


def plan_transform(spec: ProcessSpec, keywords: Mapping[str, Any],
                   full_shape: tuple[int, int] | None = None) -> Transform | None:
    """The Transform of `spec` for a record with these keyword values (None: no image steps)."""
    if not spec.active:
        return None
    transform = Transform()
    for step in spec.steps:
        if step.name == "im_patch":
            transform = _cutout(step, keywords, full_shape or (_DEFAULT_FULL_SIDE,) * 2)
        elif step.name in ("rebin", "resize"):
            transform = Transform(transform.y0, transform.x0, transform.height,
                                  transform.width, transform.scale * _scale(step))
    return transform


def _number(step: ProcessStep, key: str, default: float | None = None) -> float:
    raw = step.arg(key)
    if raw is None:
        if default is None:
            raise ProcessingError(f"{step.name} needs argument '{key}'")
        return default
    try:
        return float(raw)
    except ValueError:
        raise ProcessingError(f"{step.name} argument {key}='{raw}' is not a number") from None


def _scale(step: ProcessStep) -> float:
    scale = _number(step, "scale", 1.0)
    if not 0.0 < scale <= 1.0:
        raise ProcessingError(f"{step.name} scale must be in (0, 1], got {scale}")
    method = step.arg("method", "boxcar")
    if method not in ("boxcar", "gaussian"):
        raise ProcessingError(f"{step.name} method must be boxcar or gaussian, got '{method}'")
    return scale


def _cutout(step: ProcessStep, keywords: Mapping[str, Any],
            full_shape: tuple[int, int]) -> Transform:
    """im_patch box (x, y centre; width, height) -> fractions of the full image."""
    units = {"locunits": step.arg("locunits", "arcsec"), "boxunits": step.arg("boxunits", "arcsec")}
    for key, unit in units.items():
        if unit not in ("arcsec", "pixels"):
            raise ProcessingError(f"im_patch {key} must be arcsec or pixels, got '{unit}'")
    full_h, full_w = full_shape
    cdelt = abs(_keyword_float(keywords, "CDELT1", _DEFAULT_CDELT)) or _DEFAULT_CDELT
    crpix1 = _keyword_float(keywords, "CRPIX1", (full_w + 1) / 2)
    crpix2 = _keyword_float(keywords, "CRPIX2", (full_h + 1) / 2)
    x, y = _number(step, "x", 0.0), _number(step, "y", 0.0)
    if units["locunits"] == "arcsec":
        cx, cy = crpix1 - 1 + x / cdelt, crpix2 - 1 + y / cdelt
    else:
        cx, cy = x, y
    width, height = _number(step, "width"), _number(step, "height")
    if width <= 0 or height <= 0:
        raise ProcessingError("im_patch width and height must be > 0")
    per_px = cdelt if units["boxunits"] == "arcsec" else 1.0
    w_px, h_px = width / per_px, height / per_px
    x0 = min(max((cx - w_px / 2) / full_w, 0.0), 1.0)
    y0 = min(max((cy - h_px / 2) / full_h, 0.0), 1.0)
    return Transform(y0=y0, x0=x0, height=min(h_px / full_h, 1.0 - y0),
                     width=min(w_px / full_w, 1.0 - x0))


def _keyword_float(keywords: Mapping[str, Any], name: str, default: float) -> float:
    value = keywords.get(name)
    try:
        result = float(value) if value is not None else default
    except (TypeError, ValueError):
        return default
    return result if np.isfinite(result) else default


def mod_keywords(keywords: Mapping[str, Any], transform: Transform,
                 full_shape: tuple[int, int] | None = None) -> dict[str, Any]:
    """Keyword values of the processed record: reference pixel and scale follow the transform."""
    full_h, full_w = full_shape or (_DEFAULT_FULL_SIDE,) * 2
    result = dict(keywords)
    for axis, origin, size in (("1", transform.x0 * full_w, full_w), ("2", transform.y0 * full_h,
                                                                      full_h)):
        crpix = _keyword_float(keywords, f"CRPIX{axis}", (size + 1) / 2)
        result[f"CRPIX{axis}"] = (crpix - origin - 0.5) * transform.scale + 0.5
        if f"CDELT{axis}" in keywords and keywords[f"CDELT{axis}"] is not None:
            result[f"CDELT{axis}"] = _keyword_float(keywords, f"CDELT{axis}", 1.0) / transform.scale
    return result


def mod_series_name(series_name: str, known_names: list[str]) -> str:
    """`<series>_mod`, spelled as the catalog spells it when the catalog has it."""
    wanted = f"{series_name}_mod".lower()
    return next((name for name in known_names if name.lower() == wanted), f"{series_name}_mod")


def mod_record_name(record_name: str, mod_series: str) -> str:
    """The processed record's name: same prime-key brackets, `_mod` series."""
    bracket = record_name.find("[")
    return mod_series + (record_name[bracket:] if bracket >= 0 else "")
