"""Re-checking files on disk against what was recorded for them: size, then sha256.

Used by ``jsoc-bulk verify`` (against the API's file list or a job's manifest) and by the API
when ``retry`` is asked to fetch again the files a verify found bad.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from service.download.verify import sha256_file


@dataclass(frozen=True)
class Expected:
    """What was recorded for one file."""

    path: Path
    size: int | None
    sha256: str | None
    label: str = ""  # how to name it in a report (record and segment)
    file_id: int | None = None


@dataclass(frozen=True)
class Mismatch:
    """A recorded file that is missing or differs; ``reason`` says how."""

    expected: Expected
    reason: str

    def line(self) -> str:
        label = f" ({self.expected.label})" if self.expected.label else ""
        return f"{self.expected.path}{label}: {self.reason}"


def check_file(expected: Expected) -> Mismatch | None:
    """None when the file is there with the recorded size and sha256, else what is wrong."""
    try:
        size = os.stat(expected.path).st_size
    except FileNotFoundError:
        return Mismatch(expected, "missing")
    except OSError as exc:
        return Mismatch(expected, f"cannot be read ({exc.strerror or exc})")
    if expected.size is not None and size != expected.size:
        return Mismatch(expected, f"size is {size} bytes, recorded {expected.size}")
    if expected.sha256:
        try:
            digest = sha256_file(expected.path).hexdigest()
        except OSError as exc:
            return Mismatch(expected, f"cannot be read ({exc.strerror or exc})")
        if digest != expected.sha256:
            return Mismatch(expected, f"sha256 is {digest}, recorded {expected.sha256}")
    return None
