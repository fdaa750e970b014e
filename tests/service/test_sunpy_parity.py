"""Same records as sunpy: a jsoc-bulk job selects exactly what sunpy's ``JSOCClient.search``
selects for the same series, ``a.Time`` range, wavelengths and ``a.Sample`` cadence (both ends
included, UTC and TAI as sunpy converts them, across a leap second).

Each case runs sunpy's search and a whole jsoc-bulk job (worker in-process: planning in small
chunks, exports, downloads) against one emulator, on SQLite and Postgres, and compares the
record names: the job's file rows must be sunpy's records, each exactly once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import astropy.units as u
import drms
import pytest
from astropy.time import Time
from sunpy.net import attrs as a
from sunpy.net import jsoc

from jsocsim.server import Emulator
from service.db.repo import Repo
from tests.emulators import sunpy_pointed_at
from tests.service.jobs_harness import EMAIL, make_settings, run_job_to_end

pytestmark = pytest.mark.emulator(emails=[EMAIL], staging_delay=0.02, file_size=2000)
UTC_HOUR = ("2014-01-01T00:00:00", "2014-01-01T01:00:00")
LEAP = ("2016-12-31T23:59:00", "2017-01-01T00:01:00")  # 23:59:60 UTC is inside
TAI_RANGE = ("2014.01.01_00:00:00_TAI", "2014.01.01_02:00:00_TAI")

# (id, job spec fields, sunpy attrs beside a.Time and the series)
CASES = [
    ("hmi.v_45s hour", {"series": "hmi.v_45s", "start": UTC_HOUR[0], "end": UTC_HOUR[1],
                        "segments": ["Dopplergram"]}, []),
    ("hmi.M_720s hour", {"series": "hmi.M_720s", "start": UTC_HOUR[0], "end": UTC_HOUR[1],
                         "segments": ["magnetogram"]}, []),
    ("aia 171+193", {"series": "aia.lev1_euv_12s", "start": "2014-01-01T00:00:00",
                     "end": "2014-01-01T00:02:00", "wavelengths": [171, 193],
                     "segments": ["image"]},
     [a.Wavelength(171 * u.AA) | a.Wavelength(193 * u.AA)]),
    ("aia cadence", {"series": "aia.lev1_euv_12s", "start": "2014/01/01 00:00",
                     "end": "2014/01/01 00:10", "wavelengths": [171], "cadence": "1 min",
                     "segments": ["image"]},
     [a.Wavelength(171 * u.AA), a.Sample(1 * u.min)]),
    ("leap second", {"series": "hmi.v_45s", "start": LEAP[0], "end": LEAP[1],
                     "segments": ["Dopplergram"]}, []),
    ("TAI range", {"series": "hmi.M_720s", "start": TAI_RANGE[0], "end": TAI_RANGE[1],
                   "segments": ["magnetogram"]}, []),
    # T_OBS has no slots (selected by value); a record at 00:02:33.52 TAI follows the end
    # (00:02:33 TAI) within a second
    ("by value", {"series": "iris.lev1", "start": "2014-01-01T00:00:00",
                  "end": "2014-01-01T00:01:58", "segments": ["image_lev1"]}, []),
]


def sunpy_time(text: str) -> Time:
    """How a sunpy user writes the same instant (a TAI string becomes a TAI-scale Time)."""
    if text.endswith("_TAI"):
        return Time(text.removesuffix("_TAI").replace(".", "-", 2).replace("_", "T"),
                    scale="tai")
    return Time(text.replace("/", "-"))


def sunpy_records(base_url: str, fields: dict[str, Any], extra: list[Any]) -> list[str]:
    """Record names of sunpy's search (prime keys in the series' order), lower-cased."""
    with sunpy_pointed_at(base_url):
        series = fields["series"]
        result = jsoc.JSOCClient().search(
            a.Time(sunpy_time(fields["start"]), sunpy_time(fields["end"])),
            a.jsoc.Series(series), *extra)
        primekeys = drms.Client().pkeys(series)
    names = []
    for row in result:
        keys = "".join(f"[{row[k]}]" for k in primekeys)
        names.append(f"{series}{keys}".lower())
    return names


@pytest.mark.parametrize(("fields", "extra"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_job_records_are_sunpys_records(shared_emu: Emulator, repo: Repo, db_url: str,
                                              tmp_path: Path, fields: dict[str, Any],
                                              extra: list[Any]) -> None:
    expected = await asyncio.to_thread(sunpy_records, shared_emu.base_url, fields, extra)
    per_chunk = max(2, len(expected) // 3)  # a few chunks: boundaries inside the range
    settings = make_settings(tmp_path, shared_emu.base_url, db_url, max_chunk_records=per_chunk)
    job_id = await run_job_to_end(settings, repo, fields, timeout=120)
    files = await repo.list_files(job_id)
    got = sorted(f.record.lower() for f in files)
    assert (await repo.get_job(job_id)).state == "succeeded"
    assert expected and got == sorted(expected)  # same records, none twice
    chunks = [c for c in await repo.list_chunks(job_id) if c.state == "done"]
    assert len(chunks) > 1  # the range was cut into chunks, and their boundaries lost nothing
