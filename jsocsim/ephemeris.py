"""Solar ephemeris for the observer keywords, vectorised over times (numpy + ERFA).

The Earth's heliocentric position and velocity come from ERFA's epv00 (the model astropy's
"builtin" ephemeris and sunpy use); the observatory's offset from the Earth's centre comes
from `jsocsim.orbit` (SDO, SOHO at L1, or none for "earth"). From the observer's
heliocentric vector follow DSUN_OBS, RSUN_OBS, OBS_VR, and, with the IAU solar rotation
elements (pole RA 286.13, Dec 63.87; prime meridian 84.176 + 14.1844 deg/day, taken at the
time the light left the Sun), CRLT_OBS (B0), CRLN_OBS (L0) and CAR_ROT, as sunpy computes them.
All functions take TAI seconds since 1977-01-01 (float or numpy array).
"""

from __future__ import annotations

from typing import TypeAlias

import erfa
import numpy as np

from jsocsim import orbit

ArrayLike: TypeAlias = float | np.ndarray

JD_DRMS_EPOCH = 2443144.5  # 1977-01-01 00:00:00 (TAI) as a Julian date on the TAI scale
JD_J2000 = 2451545.0
TT_MINUS_TAI = 32.184
AU_M = 149_597_870_700.0
DAY_S = 86400.0
C_M_S = 299_792_458.0
RSUN_REF_M = 696_000_000.0
ARCSEC_PER_RAD = 206_264.806247
POLE_RA, POLE_DEC = np.radians(286.13), np.radians(63.87)
MERIDIAN_AT_J2000, ROTATION_DEG_PER_DAY = 84.176, 14.1844
SYNODIC_ROTATION = 27.2752316  # days per Carrington rotation (mean)
OBSERVERS = ("earth", "sdo", "soho")

_POLE = np.array([np.cos(POLE_DEC) * np.cos(POLE_RA), np.cos(POLE_DEC) * np.sin(POLE_RA),
                  np.sin(POLE_DEC)])
_NODE = np.array([np.cos(POLE_RA + np.pi / 2), np.sin(POLE_RA + np.pi / 2), 0.0])
_NODE90 = np.cross(_POLE, _NODE)


def julian_date(tai: ArrayLike) -> ArrayLike:
    """Julian date (TT scale) of TAI seconds since the DRMS epoch."""
    return JD_DRMS_EPOCH + (np.asarray(tai, dtype=float) + TT_MINUS_TAI) / DAY_S


_KNOTS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_MAX_KNOTS = 50_000


def _knots(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Earth's heliocentric (position m, velocity m/s) at 00:00 TAI of these days, cached."""
    todo = np.array([d for d in np.unique(days) if int(d) not in _KNOTS], dtype=float)
    if todo.size:
        if len(_KNOTS) > _MAX_KNOTS:
            _KNOTS.clear()
        helio, _ = erfa.epv00(JD_DRMS_EPOCH, todo + TT_MINUS_TAI / DAY_S)  # TDB taken as TT
        for d, p, v in zip(todo, helio["p"] * AU_M, helio["v"] * (AU_M / DAY_S), strict=True):
            _KNOTS[int(d)] = (p, v)
    pairs = [_KNOTS[int(d)] for d in days]
    return np.array([p for p, _ in pairs]), np.array([v for _, v in pairs])


def earth_state(tai: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Earth's heliocentric position (m) and velocity (m/s), shape (n, 3).

    ERFA epv00 at whole TAI days (cached: a time grid reuses them), cubic Hermite in between
    (off by < 100 m and 0.1 mm/s from epv00 itself, which takes ~60 us per time).
    """
    day = np.floor(tai / DAY_S)
    uniq, back = np.unique(day, return_inverse=True)
    p0, v0 = _knots(uniq)
    p1, v1 = _knots(uniq + 1)
    p0, v0, p1, v1 = p0[back], v0[back], p1[back], v1[back]
    s = ((tai - day * DAY_S) / DAY_S)[:, None]
    s2, s3 = s * s, s * s * s
    pos = ((2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * DAY_S * v0
           + (3 * s2 - 2 * s3) * p1 + (s3 - s2) * DAY_S * v1)
    vel = ((6 * s2 - 6 * s) * (p0 - p1) / DAY_S + (3 * s2 - 4 * s + 1) * v0
           + (3 * s2 - 2 * s) * v1)
    return pos, vel


def observer_state(tai: np.ndarray, observer: str) -> tuple[np.ndarray, np.ndarray]:
    """Heliocentric position (m) and velocity (m/s) of the observer, shape (n, 3)."""
    if observer not in OBSERVERS:
        raise ValueError(f"observer {observer!r}: expected one of {', '.join(OBSERVERS)}")
    pos, vel = earth_state(tai)
    if observer == "sdo":
        dpos, dvel = orbit.sdo_state(tai)
    elif observer == "soho":
        dpos, dvel = orbit.l1_state(pos, vel)
    else:
        return pos, vel
    return pos + dpos, vel + dvel


def _carrington(pos: np.ndarray, tai: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, ...]:
    """(B0, L0) in degrees of the direction Sun -> observer.

    L0 takes the prime meridian when the light left the Sun (sunpy's default). Real AIA
    headers of 2011 read CRLN_OBS 0.081 deg larger than this (about 500 s of rotation);
    with two headers to go on, that offset is documented rather than copied.
    """
    unit = pos / dist[:, None]
    b0 = np.degrees(np.arcsin(np.clip(unit @ _POLE, -1.0, 1.0)))
    from_node = np.degrees(np.arctan2(unit @ _NODE90, unit @ _NODE))
    days = (tai + TT_MINUS_TAI - dist / C_M_S) / DAY_S + (JD_DRMS_EPOCH - JD_J2000)
    meridian = MERIDIAN_AT_J2000 + ROTATION_DEG_PER_DAY * days
    return b0, np.mod(from_node - meridian, 360.0)


def car_rot_of(tai: ArrayLike, l0: ArrayLike) -> np.ndarray:
    """Carrington rotation number whose central meridian has longitude l0 at tai."""
    approx = (np.asarray(julian_date(tai)) - 2398140.2270) / SYNODIC_ROTATION
    return np.rint(approx - (1.0 - np.asarray(l0) / 360.0)).astype(np.int64)


def _compute(tai: np.ndarray, observer: str) -> dict[str, np.ndarray]:
    pos, vel = observer_state(tai, observer)
    dist = np.linalg.norm(pos, axis=-1)
    b0, l0 = _carrington(pos, tai, dist)
    return {
        "CAR_ROT": car_rot_of(tai, l0),
        "CRLT_OBS": b0,
        "CRLN_OBS": l0,
        "DSUN_OBS": dist,
        "RSUN_OBS": np.arcsin(RSUN_REF_M / dist) * ARCSEC_PER_RAD,
        "OBS_VR": np.einsum("ij,ij->i", pos, vel) / dist,
    }


def observer_keywords(tai: ArrayLike, observer: str = "earth") -> dict[str, np.ndarray]:
    """All observer keywords at once; each time is computed once (repeated times are shared).

    A scalar time gives 0-d arrays. DSUN_OBS in m, RSUN_OBS in arcsec, OBS_VR in m/s
    (positive moving away from the Sun), CRLT_OBS/CRLN_OBS in degrees.
    """
    t = np.asarray(tai, dtype=float)
    flat = np.atleast_1d(t).ravel()
    grid, back = np.unique(flat, return_inverse=True)
    values = _compute(grid, observer)
    return {k: v[back].reshape(t.shape) for k, v in values.items()}


def crlt_obs(tai: ArrayLike, observer: str = "earth") -> ArrayLike:
    """Heliographic latitude of the observer, B0 (deg), within about +/-7.25."""
    return observer_keywords(tai, observer)["CRLT_OBS"]


def crln_obs(tai: ArrayLike, observer: str = "earth") -> ArrayLike:
    """Carrington longitude of the disk centre, L0 (deg, 0..360)."""
    return observer_keywords(tai, observer)["CRLN_OBS"]


def car_rot(tai: ArrayLike, observer: str = "earth") -> ArrayLike:
    """Carrington rotation number of the central meridian (e.g. 2096 in May 2010)."""
    return observer_keywords(tai, observer)["CAR_ROT"]


def dsun_obs(tai: ArrayLike, observer: str = "earth") -> ArrayLike:
    """Sun-observer distance in metres."""
    return observer_keywords(tai, observer)["DSUN_OBS"]


def rsun_obs(tai: ArrayLike, observer: str = "earth") -> ArrayLike:
    """Apparent solar radius in arcsec (about 944 in July to 976 in January)."""
    return observer_keywords(tai, observer)["RSUN_OBS"]
