"""Time strings, leap seconds, slot arithmetic and the solar ephemeris."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.time import Time

from jsocsim import ephemeris
from jsocsim.timeslots import (
    duration_slots,
    format_time,
    parse_duration,
    parse_time,
    sample_stride,
    slot_index,
    slot_time,
)

pytestmark = pytest.mark.unit

HMI_EPOCH = parse_time("1993.01.01_00:00:00_TAI")


def astropy_tai_minus_utc(iso: str) -> float:
    """TAI-UTC from astropy (an independent source) at a UTC instant."""
    t = Time(iso, scale="utc")
    return round((t.tai.datetime - t.datetime).total_seconds())


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("2013.07.03_08:42_TAI", "2013.07.03_08:42:00_TAI"),
        ("2016.04.01_TAI", "2016.04.01_00:00:00_TAI"),
        ("2010.07.25_13", "2010-07-25T13:00:00Z"),
        ("2010.07.25", "2010.07.25_00:00:00_UTC"),
        ("2025-01-01T04:33:30.000", "2025.01.01_04:33:30_UTC"),
        ("2014-01-01T00:00:00Z", "2014.01.01_00:00:00_UT"),
    ],
)
def test_equivalent_spellings(a: str, b: str) -> None:
    assert parse_time(a) == parse_time(b)


@pytest.mark.parametrize(
    "day", ["2009-06-01", "2012-08-01", "2015-08-01", "2016-12-31", "2017-01-02"]
)
def test_utc_input_uses_real_leap_seconds(day: str) -> None:
    utc = parse_time(f"{day}T00:00:00Z")
    tai = parse_time(f"{day.replace('-', '.')}_00:00:00_TAI")
    assert tai - utc == -astropy_tai_minus_utc(f"{day}T00:00:00")


def test_leap_second_2016() -> None:
    before = parse_time("2016-12-31T23:59:59Z")
    leap = parse_time("2016-12-31T23:59:60Z")
    after = parse_time("2017-01-01T00:00:00Z")
    assert (leap - before, after - leap) == (1.0, 1.0)
    assert format_time(leap, "iso_z") == "2016-12-31T23:59:60Z"
    assert format_time(before, "iso_z") == "2016-12-31T23:59:59Z"
    assert format_time(after, "iso_z") == "2017-01-01T00:00:00Z"
    assert (
        format_time(after, "tai")
        == f"2017.01.01_00:00:{astropy_tai_minus_utc('2017-01-01'):02d}_TAI"
    )


def test_record_set_help_example_utc_to_nearest_45s_slot() -> None:
    t = parse_time("2010.07.25")  # UTC, TAI-UTC = 34 s then
    assert format_time(t, "tai") == "2010.07.25_00:00:34_TAI"
    idx = slot_index(t, HMI_EPOCH, 45.0)
    assert format_time(slot_time(idx, HMI_EPOCH, 45.0), "tai") == "2010.07.25_00:00:45_TAI"


def test_aia_display_in_utc_z() -> None:
    offset = astropy_tai_minus_utc("2014-01-01")
    # 12 s slots on TAI multiples of 12 s from the 1977 epoch; the first of 2014 (UTC) is
    # the multiple of 12 at or after TAI 00:00:offset.
    first_tai = parse_time("2014.01.01_00:00:00_TAI") + math.ceil(offset / 12) * 12
    assert (
        format_time(first_tai, "iso_z")
        == f"2014-01-01T00:00:{12 * math.ceil(offset / 12) - offset:02d}Z"
    )
    assert format_time(first_tai + 0.57, "iso_frac").endswith(".57Z")


def test_slot_rounding_ties_up_and_ts_slot_floor() -> None:
    assert slot_index(HMI_EPOCH + 22.4, HMI_EPOCH, 45.0) == 0
    assert slot_index(HMI_EPOCH + 22.5, HMI_EPOCH, 45.0) == 1  # tie goes up
    assert slot_index(HMI_EPOCH + 44.9, HMI_EPOCH, 45.0, round_=0) == 0  # plain floor
    assert slot_index(HMI_EPOCH + 40.0, HMI_EPOCH, 45.0, round_=10.0) == 1  # round/2 = 5
    assert slot_index(HMI_EPOCH + 39.0, HMI_EPOCH, 45.0, round_=10.0) == 0


def test_durations() -> None:
    assert [parse_duration(s) for s in ("45s", "3m", "6h", "1d", "300.0s", "12")] == [
        45.0,
        180.0,
        21600.0,
        86400.0,
        300.0,
        12.0,
    ]
    assert duration_slots(240, 45) == math.floor(240 / 45)
    assert duration_slots(10, 45) == 1  # shorter than a step rounds up to one slot
    assert sample_stride(600, 45) == round(600 / 45)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("3 weeks")


@pytest.mark.parametrize("bad", ["yesterday", "2014.13.01", "2014.02.30_TAI", "2014-01-01T25:00"])
def test_bad_times_say_what_is_accepted(bad: str) -> None:
    with pytest.raises(ValueError, match=r"time|date|range"):
        parse_time(bad)


def test_format_styles_round_trip() -> None:
    t = parse_time("2013.12.31_23:59:39.20_UTC")
    assert parse_time(format_time(t, "iso_frac")) == pytest.approx(t)
    assert parse_time(format_time(t, "tai_frac")) == pytest.approx(t)
    with pytest.raises(ValueError, match="style"):
        format_time(t, "nope")


def test_ephemeris_plausible() -> None:
    days = parse_time("2014.01.01_TAI") + 86400.0 * np.arange(730)
    b0 = ephemeris.crlt_obs(days)
    # the IAU pole tilts 7.25 deg from the J2000 ecliptic; sunpy's B0 (and this) peaks at 7.2521
    assert b0.max() <= 7.253 and b0.min() >= -7.253
    assert b0.max() > 7.2 and b0.min() < -7.2  # reaches the extremes in Sept / March
    rsun = ephemeris.rsun_obs(days)
    assert 940 < rsun.min() < rsun.max() < 980
    dsun = ephemeris.dsun_obs(days) / ephemeris.AU_M
    assert 0.98 < dsun.min() < dsun.max() < 1.02
    rot = ephemeris.car_rot(days)
    assert np.all(np.diff(rot) >= 0) and rot[-1] - rot[0] == pytest.approx(730 / 27.2753, abs=1)
    lon = ephemeris.crln_obs(days[:2])
    # seen from Earth the central meridian moves by 360 deg per synodic Carrington rotation
    assert (lon[0] - lon[1]) % 360 == pytest.approx(360 / 27.2753, abs=0.3)


def test_carrington_rotation_numbers() -> None:
    assert int(ephemeris.car_rot(parse_time("2010.05.10_TAI"))) == 2096
    assert 2276 <= int(ephemeris.car_rot(parse_time("2024.01.01_TAI"))) <= 2292
    scalar = ephemeris.observer_keywords(parse_time("2015.03.01_TAI"))
    vector = ephemeris.observer_keywords(np.array([parse_time("2015.03.01_TAI")] * 2))
    assert float(scalar["CRLT_OBS"]) == pytest.approx(float(vector["CRLT_OBS"][1]))
