"""sunpy's JSOCClient.search against the emulator (sunpy validates against series_struct)."""

from __future__ import annotations

import astropy.units as u
import pytest
from astropy.time import Time
from sunpy.net import attrs as a
from sunpy.net import jsoc

from jsocsim.catalog import Catalog
from jsocsim.timeslots import parse_time, slot_index
from tests.emulator.helpers import DEFAULT_OPTIONS

pytestmark = pytest.mark.emulator(**DEFAULT_OPTIONS)
CATALOG = Catalog.load()
START, END = "2014-01-01T00:00:00", "2014-01-01T00:10:00"


def expected_slots(series: str, start_utc: str, end_utc: str) -> int:
    """Slots of an inclusive a-b range (sunpy sends TAI times without fractions)."""
    key = CATALOG.get(series).time_key
    first = slot_index(parse_time(Time(start_utc).tai.strftime("%Y.%m.%d_%H:%M:%S_TAI")),
                       key.epoch, key.step)
    last = slot_index(parse_time(Time(end_utc).tai.strftime("%Y.%m.%d_%H:%M:%S_TAI")),
                      key.epoch, key.step)
    return last - first + 1


@pytest.fixture
def client(sunpy_jsoc) -> jsoc.JSOCClient:
    return jsoc.JSOCClient()


def test_search_time_and_series(client: jsoc.JSOCClient) -> None:
    result = client.search(a.Time(START, END), a.jsoc.Series("hmi.M_45s"))
    assert len(result) == expected_slots("hmi.M_45s", START, END)
    assert "T_REC" in result.colnames and "QUALITY" in result.colnames


def test_search_sample(client: jsoc.JSOCClient) -> None:
    n = expected_slots("hmi.M_45s", START, END)
    result = client.search(a.Time(START, END), a.jsoc.Series("hmi.M_45s"), a.Sample(90 * u.s))
    assert len(result) == (n - 1) // 2 + 1  # @90s keeps every second 45 s slot


def test_search_wavelength_and_primekey(client: jsoc.JSOCClient) -> None:
    end = "2014-01-01T00:01:00"
    n = expected_slots("aia.lev1_euv_12s", START, end)
    by_wave = client.search(a.Time(START, end), a.jsoc.Series("aia.lev1_euv_12s"),
                            a.Wavelength(171 * u.AA))
    by_key = client.search(a.Time(START, end), a.jsoc.Series("aia.lev1_euv_12s"),
                           a.jsoc.PrimeKey("WAVELNTH", "171"))
    assert len(by_wave) == len(by_key) == n
    assert {int(w) for w in by_wave["WAVELNTH"]} == {171}
    assert list(by_wave["T_REC"]) == list(by_key["T_REC"])


def test_search_segment_and_keyword(client: jsoc.JSOCClient) -> None:
    series = a.jsoc.Series("hmi.M_45s")
    n = expected_slots("hmi.M_45s", START, END)
    with_seg = client.search(a.Time(START, END), series, a.jsoc.Segment("magnetogram"))
    assert len(with_seg) == n
    assert all(str(p).startswith("/SUM") for p in with_seg["magnetogram"])
    # Default records all have QUALITY 0, so "= 0" keeps every slot and "> 0" none.
    kept = client.search(a.Time(START, END), series, a.jsoc.Keyword("QUALITY") == 0)
    dropped = client.search(a.Time(START, END), series, a.jsoc.Keyword("QUALITY") > 0)
    assert len(kept) == n and len(dropped) == 0


def test_search_errors_from_series_struct(client: jsoc.JSOCClient) -> None:
    series = a.jsoc.Series("hmi.M_45s")
    with pytest.raises(ValueError, match="Unexpected Segments"):
        client.search(a.Time(START, END), series, a.jsoc.Segment("nosuchsegment"))
    with pytest.raises(ValueError, match="is not supported by series"):
        client.search(a.Time(START, END), series, a.jsoc.Keyword("NOSUCHKEY") == 1)
    with pytest.raises(TypeError, match="does not support wavelength"):
        client.search(a.Time(START, END), series, a.Wavelength(171 * u.AA))
