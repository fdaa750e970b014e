"""The Sun seen from SDO (HMI, AIA) and from SOHO at L1 (MDI): observer keywords against
sunpy.coordinates.sun, real AIA headers and the value drms's own online test pins."""

from __future__ import annotations

import astropy.units as u
import drms
import numpy as np
import pytest
from astropy.time import Time
from sunpy.coordinates import sun

from jsocsim import ephemeris
from jsocsim.orbit import GEO_RADIUS_M, L1_DISTANCE_M
from jsocsim.timeslots import parse_time
from tests.emulator.helpers import DEFAULT_OPTIONS

pytestmark = pytest.mark.emulator(**DEFAULT_OPTIONS)

START, END = parse_time("2010.05.01_TAI"), parse_time("2025.12.31_TAI")


def astropy_time(tai: np.ndarray) -> Time:
    return Time(ephemeris.JD_DRMS_EPOCH, np.asarray(tai) / 86400.0, format="jd", scale="tai")


def sunpy_view(tai: np.ndarray) -> dict[str, np.ndarray]:
    """B0, L0 (deg) and the Earth's distance (m) from sunpy, at TAI seconds."""
    t = astropy_time(tai)
    return {"B0": sun.B0(t).deg, "L0": sun.L0(t).deg, "D": sun.earth_distance(t).to_value(u.m)}


def lon_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0


@pytest.fixture(scope="module")
def span() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    # 500 times over 2010-2025, spread over all times of day (not a whole number of days)
    tai = np.linspace(START, END, 500)
    return tai, sunpy_view(tai)


@pytest.mark.unit
def test_geocentric_part_is_sunpys(span: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    tai, ref = span
    earth = ephemeris.observer_keywords(tai, "earth")
    assert np.abs(earth["CRLT_OBS"] - ref["B0"]).max() < 1e-5
    assert np.abs(lon_diff(earth["CRLN_OBS"], ref["L0"])).max() < 1e-3
    assert np.abs(earth["DSUN_OBS"] - ref["D"]).max() < 1_000.0  # metres


@pytest.mark.unit
def test_sdo_stays_within_the_orbital_bound_of_sunpys_earth_view(
        span: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    tai, ref = span
    sdo = ephemeris.observer_keywords(tai, "sdo")
    db0 = sdo["CRLT_OBS"] - ref["B0"]
    dl0 = lon_diff(sdo["CRLN_OBS"], ref["L0"])
    dd = sdo["DSUN_OBS"] - ref["D"]
    assert np.abs(db0).max() < 0.02 and np.abs(dl0).max() < 0.02
    assert np.abs(dd).max() <= GEO_RADIUS_M + 1_000.0
    # and it is not geocentric: the offsets reach most of the orbit's size, both ways
    assert db0.min() < -0.005 < 0.005 < db0.max()
    assert dd.min() < -30_000e3 and dd.max() > 30_000e3


def test_daily_orbital_term_through_drms(drms_client: drms.Client) -> None:
    keys = drms_client.query("hmi.M_720s[2021.07.03_00:00_TAI/1d]",
                             key="T_REC,CRLT_OBS,CRLN_OBS,DSUN_OBS,RSUN_OBS,OBS_VR")
    assert len(keys) == 120
    tai = np.array([parse_time(t) for t in keys.T_REC])
    ref = sunpy_view(tai)
    dd = keys.DSUN_OBS.to_numpy() - ref["D"]
    # one sidereal day: SDO swings from ~42,000 km nearer the Sun to ~42,000 km farther
    assert dd.max() - dd.min() > 60_000e3 and np.abs(dd).max() <= GEO_RADIUS_M + 1_000.0
    assert keys.OBS_VR.min() < -2_000 and keys.OBS_VR.max() > 2_000  # ~3 km/s orbit speed
    db0 = keys.CRLT_OBS.to_numpy() - ref["B0"]
    assert np.abs(db0).max() < 0.02 and db0.max() - db0.min() > 0.005
    assert np.abs(lon_diff(keys.CRLN_OBS, ref["L0"])).max() < 0.02
    rsun = np.degrees(np.arcsin(ephemeris.RSUN_REF_M / keys.DSUN_OBS.to_numpy())) * 3600
    assert np.allclose(keys.RSUN_OBS, rsun, atol=1e-5)


def test_drms_online_test_value(drms_client: drms.Client) -> None:
    # drms's online test_query_key: hmi.v_45s[2013.07.03_08:42_TAI/3m] has CRLT_OBS 3.14159
    # (within 1e-4) at JSOC. Geocentric B0 is 0.0094 deg off; the SDO model within 2e-4.
    keys = drms_client.query("hmi.v_45s[2013.07.03_08:42_TAI/3m]", key="T_REC,CRLT_OBS")
    assert len(keys) == 4
    assert (keys.CRLT_OBS - 3.14159).abs().max() < 2e-4
    geocentric = sunpy_view(np.array([parse_time(t) for t in keys.T_REC]))["B0"]
    assert (np.abs(geocentric - 3.14159) > 0.009).all()


@pytest.mark.unit
@pytest.mark.parametrize(("t_obs", "dsun", "obs_vr", "crlt"), [
    # two published AIA 171 A lev1 headers (T_OBS, DSUN_OBS, OBS_VR, CRLT_OBS)
    ("2011-05-25T09:07:01.34Z", 1.5153469e11, -1256.5236, -1.4993120),
    ("2011-06-07T06:33:02.77Z", 151846026489.0, 86.972467, 0.048591),
])
def test_matches_real_aia_headers(t_obs: str, dsun: float, obs_vr: float, crlt: float) -> None:
    got = ephemeris.observer_keywords(parse_time(t_obs), "sdo")
    assert float(got["DSUN_OBS"]) == pytest.approx(dsun, abs=200e3)  # within 200 km
    assert float(got["OBS_VR"]) == pytest.approx(obs_vr, abs=15.0)  # m/s, of ~3,000
    assert float(got["CRLT_OBS"]) == pytest.approx(crlt, abs=0.002)


def test_mdi_sees_the_sun_from_l1(drms_client: drms.Client) -> None:
    keys = drms_client.query("mdi.fd_V[2010.07.03_00:00_TAI/1d@1h]",
                             key="T_REC,CRLT_OBS,DSUN_OBS,OBS_VR")
    assert len(keys) == 24
    ref = sunpy_view(np.array([parse_time(t) for t in keys.T_REC]))
    dd = keys.DSUN_OBS.to_numpy() - ref["D"]
    assert np.allclose(dd, -L1_DISTANCE_M, atol=1e3)  # no daily orbit term at L1
    assert np.abs(keys.CRLT_OBS - ref["B0"]).max() < 1e-3
    assert np.abs(keys.OBS_VR).max() < 100.0  # Earth's own radial speed in July: ~ 0


@pytest.mark.unit
def test_bad_observer_is_refused() -> None:
    with pytest.raises(ValueError, match="observer 'moon'"):
        ephemeris.observer_keywords(START, "moon")
