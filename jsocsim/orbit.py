"""Where the observatories are relative to the Earth's centre (GCRS, metres and m/s).

SDO flies an inclined geosynchronous orbit over about 102 deg W. The model is a circular orbit
of one sidereal day whose phase keeps the sub-satellite point's mean longitude at the station
longitude (a figure eight of +/- the inclination in latitude), with the inclination, the
right ascension of the ascending node and the station longitude (101.7-101.9 deg W)
interpolated linearly between public two-line element sets of SDO (NORAD 36395) below. Its
position is good to a few hundred km (DSUN_OBS of real AIA headers within 120 km).
SOHO (MDI) sits at the Sun-Earth L1 point, 1.5 million km sunward of the Earth (its halo
orbit around L1 is left out).
"""

from __future__ import annotations

import erfa
import numpy as np

from jsocsim.timeslots import parse_time, tai_minus_utc

GEO_RADIUS_M = 42_164_170.0
EARTH_ROTATION = 7.2921150e-5  # rad/s, sidereal
L1_DISTANCE_M = 1.4916e9  # Earth to L1
# (epoch, inclination deg, RAAN deg, mean longitude deg E) from SDO's published TLEs (epochs
# 11027.44, 17169.43, 25168.45); the mean longitude is RAAN + argument of perigee + mean
# anomaly - GMST at the epoch. The inclination grows and the node regresses (lunisolar pull).
SDO_ELEMENTS = (
    ("2011-01-27T10:33:36Z", 27.9384, 183.3973, -101.832),
    ("2017-06-18T10:23:45Z", 28.7658, 140.4053, -101.683),
    ("2025-06-17T10:55:05Z", 33.8852, 91.9242, -101.907),
)
_EPOCHS = np.array([parse_time(e[0]) for e in SDO_ELEMENTS])
_INCL = np.radians([e[1] for e in SDO_ELEMENTS])
_RAAN = np.radians([e[2] for e in SDO_ELEMENTS])
_LONGITUDE = np.radians([e[3] for e in SDO_ELEMENTS])
JD_DRMS_EPOCH = 2443144.5  # 1977-01-01 00:00:00 as a Julian date
TT_MINUS_TAI = 32.184


def sidereal_angle(tai: np.ndarray) -> np.ndarray:
    """Greenwich mean sidereal time (radians) at TAI seconds (UT1 taken as UTC)."""
    ut = (tai - tai_minus_utc(tai)) / 86400.0
    tt = (tai + TT_MINUS_TAI) / 86400.0
    angle: np.ndarray = erfa.gmst06(JD_DRMS_EPOCH, ut, JD_DRMS_EPOCH, tt)  # erfa is untyped
    return angle


def sdo_state(tai: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SDO's geocentric position (m) and velocity (m/s), shape (n, 3), equatorial axes."""
    tai = np.asarray(tai, dtype=float)
    incl = np.interp(tai, _EPOCHS, _INCL)
    node = np.interp(tai, _EPOCHS, _RAAN)
    longitude = np.interp(tai, _EPOCHS, _LONGITUDE)
    u = sidereal_angle(tai) + longitude - node  # argument of latitude
    cn, sn, ci, si = np.cos(node), np.sin(node), np.cos(incl), np.sin(incl)
    cu, su = np.cos(u), np.sin(u)
    pos = GEO_RADIUS_M * np.stack([cn * cu - sn * su * ci, sn * cu + cn * su * ci, su * si], -1)
    speed = GEO_RADIUS_M * EARTH_ROTATION
    vel = speed * np.stack([-cn * su - sn * cu * ci, -sn * su + cn * cu * ci, cu * si], -1)
    return pos, vel


def l1_state(earth_pos: np.ndarray, earth_vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offset of L1 from the Earth (m, m/s) given the Earth's heliocentric state (m, m/s)."""
    dist = np.linalg.norm(earth_pos, axis=-1, keepdims=True)
    scale = L1_DISTANCE_M / dist
    return -earth_pos * scale, -earth_vel * scale
