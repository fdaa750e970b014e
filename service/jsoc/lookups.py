"""What the service asks JSOC about a job before taking it, cached for the process.

* the series JSOC lists (for "did you mean …" when a series name is misspelt);
* the wavelengths a series has (the ``WAVELNTH`` values of its newest slot);
* the time of a series' newest record (not cached: mirrors and previews ask each time);
* whether a notify address is registered (``checkAddress.sh``, as drms's ``check_email``):
  a registered address is remembered for a day, a refused one for a minute (the user is
  expected to register and try again).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Generic, TypeVar

from service.jsoc.client import JsocClient
from service.jsoc.listing import parse_listing
from service.jsoc.metadata import SeriesMeta
from service.jsoc.status import JsocError, StatusKind
from service.planning.recordsets import newest_recordset

REGISTER_URL = "http://jsoc.stanford.edu/ajax/register_email.html"
NAMES_TTL = 3600.0
WAVELENGTHS_TTL = 3600.0
EMAIL_OK_TTL = 86400.0
EMAIL_REFUSED_TTL = 60.0
WAVELENGTH_KEY = "WAVELNTH"

T = TypeVar("T")


class _Expiring(Generic[T]):
    """Values per (server, key), each forgotten after its time to live (monotonic clock)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[float, T]] = {}  # -> (until, value)

    def get(self, jsoc: JsocClient, key: str) -> T | None:
        hit = self._entries.get((str(jsoc.base_url), key))
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, jsoc: JsocClient, key: str, value: T, ttl: float) -> T:
        self._entries[(str(jsoc.base_url), key)] = (time.monotonic() + ttl, value)
        return value


_NAMES: _Expiring[list[str]] = _Expiring()
_WAVELENGTHS: _Expiring[list[float]] = _Expiring()
_EMAILS: _Expiring[EmailVerdict] = _Expiring()


async def series_names(jsoc: JsocClient) -> list[str]:
    """The series JSOC lists (raises JsocError when it cannot be asked)."""
    names = _NAMES.get(jsoc, "")
    if names is None:
        names = _NAMES.put(jsoc, "", await jsoc.series_list(), NAMES_TTL)
    return names


async def newest_time(jsoc: JsocClient, meta: SeriesMeta) -> float | None:
    """TAI time of the series' newest record at JSOC (None when it has none, or no time key);
    not cached: a mirror's frontier and a preview ask each time."""
    key = meta.time_key()
    if key is None:
        return None
    reply = await jsoc.rs_list(newest_recordset(meta), keys=[key.name], n=-1)
    times = parse_listing(reply).times(key.name)
    return max(times) if times else None


async def series_wavelengths(jsoc: JsocClient, meta: SeriesMeta) -> list[float]:
    """The distinct WAVELNTH values of the series' newest slot, sorted ([] if it has none)."""
    cached = _WAVELENGTHS.get(jsoc, meta.name.lower())
    if cached is not None:
        return cached
    reply = await jsoc.rs_list(newest_recordset(meta), keys=[WAVELENGTH_KEY])
    values: set[float] = set()
    for value in parse_listing(reply).values(WAVELENGTH_KEY):
        try:
            values.add(float(value))
        except (TypeError, ValueError):
            continue  # MISSING and the like
    return _WAVELENGTHS.put(jsoc, meta.name.lower(), sorted(values), WAVELENGTHS_TTL)


@dataclass(frozen=True)
class EmailVerdict:
    """checkAddress's answer: ``ok`` (registered), ``refused`` (with what to do),
    ``unreachable`` (JSOC could not be asked: check again later) or ``unknown`` (the check
    itself failed at JSOC; JSOC checks again when the export is requested)."""

    outcome: str  # "ok" | "refused" | "unreachable" | "unknown"
    message: str = ""


def verdict_for(email: str, status: int) -> EmailVerdict:
    """A checkAddress status (docs/jsoc-protocol.md §3.7) as a verdict saying what to do."""
    if status == 2:
        return EmailVerdict("ok")
    if status in (4, 1):
        return EmailVerdict("refused", (
            f"notify address {email} is not registered with JSOC: register it at "
            f"{REGISTER_URL} and answer the confirmation mail, then submit again (or give "
            "another registered address in notify)"))
    if status == 3:
        return EmailVerdict("refused", (
            f"notify address {email} has a pending JSOC registration: answer the confirmation "
            "mail JSOC sent to it (it expires after about 15 minutes; register again at "
            f"{REGISTER_URL} if it did), then submit again"))
    if status == -2:
        return EmailVerdict("refused", (
            f"JSOC says {email} is not a valid email address; give the address you registered "
            f"at {REGISTER_URL}"))
    return EmailVerdict("unknown", f"JSOC's address check failed (checkAddress status {status})")


async def check_email(jsoc: JsocClient, email: str) -> EmailVerdict:
    """Whether JSOC accepts ``email`` for exports (cached: a day if yes, a minute if not)."""
    cached = _EMAILS.get(jsoc, email.lower())
    if cached is not None:
        return cached
    try:
        status = await jsoc.check_address(email)
    except JsocError as exc:
        if exc.kind is not StatusKind.TRANSIENT:
            raise
        return EmailVerdict("unreachable", f"JSOC could not be reached to check {email}: "
                                           f"{exc.message}")
    verdict = verdict_for(email, status)
    if verdict.outcome in ("ok", "refused"):
        ttl = EMAIL_OK_TTL if verdict.outcome == "ok" else EMAIL_REFUSED_TTL
        _EMAILS.put(jsoc, email.lower(), verdict, ttl)
    return verdict
