"""Series metadata for the service's tests: hand-built SeriesMeta shaped like JSOC's series
(facts from docs/jsoc-protocol.md §9.1: prime keys, steps, segments; keyword lists are a
subset), and the emulator's own, fetched over HTTP."""

from __future__ import annotations

import json
from typing import Any

from service.jsoc.metadata import (
    KeywordInfo,
    PrimeKeyInfo,
    SegmentInfo,
    SeriesMeta,
    parse_series_struct,
)

HMI_EPOCH = "1993.01.01_00:00:00_TAI"


def _keywords(*pairs: tuple[str, str], time_units: str = "TAI") -> list[KeywordInfo]:
    return [KeywordInfo(name, kind, units=time_units if kind == "time" else "")
            for name, kind in pairs]


def make_meta(name: str, primekeys: list[PrimeKeyInfo], keywords: list[KeywordInfo],
              segments: list[str], raw: dict[str, Any] | None = None) -> SeriesMeta:
    return SeriesMeta(name=name, note="", primekeys=primekeys, keywords=keywords,
                      segments=[SegmentInfo(s) for s in segments], raw=raw or {})


def t_rec(step: float, epoch: str | None = HMI_EPOCH, name: str = "T_REC") -> PrimeKeyInfo:
    return PrimeKeyInfo(name, slotted=True, step=step, epoch=epoch, is_time=True)


def hmi_meta(name: str = "hmi.M_720s", step: float = 720, segment: str = "magnetogram",
             ) -> SeriesMeta:
    return make_meta(
        name, [t_rec(step), PrimeKeyInfo("CAMERA")],
        _keywords(("T_REC", "time"), ("CAMERA", "int"), ("T_OBS", "time"), ("QUALITY", "int"),
                  ("EXPTIME", "double"), ("WAVELNTH", "float"), ("INSTRUME", "string")),
        [segment])


def aia_meta() -> SeriesMeta:
    return make_meta(
        "aia.lev1_euv_12s", [t_rec(12, "1977.01.01_00:00:00_TAI"), PrimeKeyInfo("WAVELNTH")],
        _keywords(("T_REC", "time"), ("WAVELNTH", "int"), ("EXPTIME", "float"),
                  ("QUALITY", "int"), ("T_OBS", "time"), time_units="UTC"),
        ["image", "spikes"])


def sharp_meta() -> SeriesMeta:
    return make_meta(
        "hmi.sharp_720s", [PrimeKeyInfo("HARPNUM"), t_rec(720)],
        _keywords(("HARPNUM", "int"), ("T_REC", "time"), ("QUALITY", "int")),
        ["magnetogram", "bitmap", "Dopplergram", "continuum"])


def iris_meta() -> SeriesMeta:
    """A time key without slots (T_OBS) followed by FSN."""
    return make_meta("iris.lev1", [PrimeKeyInfo("T_OBS", is_time=True), PrimeKeyInfo("FSN")],
                     _keywords(("T_OBS", "time"), ("FSN", "int")), ["image"])


def no_time_meta() -> SeriesMeta:
    return make_meta("hmi.v_sht_modes_x", [PrimeKeyInfo("LMIN"), PrimeKeyInfo("LMAX")],
                     _keywords(("LMIN", "int"), ("LMAX", "int")), ["m6"])



async def jsoc_info(session: Any, base: str, **params: str) -> dict[str, Any]:
    """One jsoc_info call on the emulator; fails the test unless status is 0."""
    async with session.get(base + "cgi-bin/ajax/jsoc_info", params=params) as response:
        assert response.status == 200
        payload = json.loads(await response.text())
    assert payload.get("status") == 0, payload
    return payload


async def emulator_meta(session: Any, base: str, series: str) -> SeriesMeta:
    """The emulator's series_struct for ``series``, parsed as the service parses JSOC's."""
    payload = await jsoc_info(session, base, op="series_struct", ds=series)
    return parse_series_struct(payload, series)
