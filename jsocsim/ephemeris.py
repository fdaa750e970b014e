"""Low-precision solar ephemeris for observer keywords (numpy-vectorisable).

Standard almanac formulas (Astronomical Almanac low-precision Sun, Meeus ch. 29 for the
rotation axis and Carrington longitude): accurate to ~0.01 deg, plenty for emulated headers.
All functions take TAI seconds since 1977-01-01 (float or numpy array).
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np

ArrayLike: TypeAlias = float | np.ndarray

JD_DRMS_EPOCH = 2443144.5  # 1977-01-01 00:00:00 (TAI) as a Julian date on the TAI scale
TT_MINUS_TAI = 32.184
AU_M = 149_597_870_691.0
RSUN_REF_M = 696_000_000.0
ARCSEC_PER_RAD = 206_264.806247
SOLAR_AXIS_INCLINATION = 7.25  # degrees
CARRINGTON_PERIOD = 25.38  # sidereal days
SYNODIC_ROTATION = 27.2752316  # days per Carrington rotation (mean)


def julian_date(tai: ArrayLike) -> ArrayLike:
    """Julian date (TT scale) of TAI seconds since the DRMS epoch."""
    return JD_DRMS_EPOCH + (np.asarray(tai, dtype=float) + TT_MINUS_TAI) / 86400.0


def _sun_longitude_distance(jd: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Apparent ecliptic longitude (deg) and distance (AU) of the Sun."""
    n = np.asarray(jd) - 2451545.0
    mean_lon = 280.460 + 0.9856474 * n
    g = np.radians(357.528 + 0.9856003 * n)
    lon = mean_lon + 1.915 * np.sin(g) + 0.020 * np.sin(2 * g)
    dist = 1.00014 - 0.01671 * np.cos(g) - 0.00014 * np.cos(2 * g)
    return np.mod(lon, 360.0), dist


def _axis_angles(jd: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(B0 deg, Carrington longitude L0 deg) of the disk centre seen from Earth."""
    jd = np.asarray(jd, dtype=float)
    lon, _ = _sun_longitude_distance(jd)
    node = np.radians(73.6667 + 1.3958333 * (jd - 2396758.0) / 36525.0)
    incl = np.radians(SOLAR_AXIS_INCLINATION)
    lam = np.radians(lon) - node
    b0 = np.degrees(np.arcsin(np.sin(lam) * np.sin(incl)))
    eta = np.degrees(np.arctan2(-np.sin(lam) * np.cos(incl), -np.cos(lam)))
    theta = (jd - 2398220.0) * 360.0 / CARRINGTON_PERIOD
    l0 = np.mod(eta - theta, 360.0)
    return b0, l0


def crlt_obs(tai: ArrayLike) -> ArrayLike:
    """Heliographic latitude of the observer, B0 (deg), within +/-7.25."""
    return _axis_angles(julian_date(tai))[0]


def crln_obs(tai: ArrayLike) -> ArrayLike:
    """Carrington longitude of the disk centre, L0 (deg, 0..360)."""
    return _axis_angles(julian_date(tai))[1]


def car_rot(tai: ArrayLike) -> ArrayLike:
    """Carrington rotation number of the central meridian (e.g. 2096 in May 2010)."""
    jd = julian_date(tai)
    _, l0 = _axis_angles(jd)
    approx = (np.asarray(jd) - 2398140.2270) / SYNODIC_ROTATION
    return np.rint(approx - (1.0 - l0 / 360.0)).astype(np.int64)


def dsun_obs(tai: ArrayLike) -> ArrayLike:
    """Sun-observer distance in metres (Earth-based observer)."""
    return _sun_longitude_distance(julian_date(tai))[1] * AU_M


def rsun_obs(tai: ArrayLike) -> ArrayLike:
    """Apparent solar radius in arcsec (about 944 in July to 976 in January)."""
    return np.arcsin(RSUN_REF_M / dsun_obs(tai)) * ARCSEC_PER_RAD


def observer_keywords(tai: ArrayLike) -> dict[str, np.ndarray]:
    """All observer keywords at once (one pass over the formulas)."""
    jd = julian_date(tai)
    _, dist = _sun_longitude_distance(jd)
    b0, l0 = _axis_angles(jd)
    approx = (np.asarray(jd) - 2398140.2270) / SYNODIC_ROTATION
    dsun = dist * AU_M
    return {
        "CAR_ROT": np.rint(approx - (1.0 - l0 / 360.0)).astype(np.int64),
        "CRLT_OBS": b0,
        "CRLN_OBS": l0,
        "DSUN_OBS": dsun,
        "RSUN_OBS": np.arcsin(RSUN_REF_M / dsun) * ARCSEC_PER_RAD,
    }
