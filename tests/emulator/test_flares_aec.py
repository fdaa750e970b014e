"""Real GOES flares as data, and AIA's automatic exposure control (AEC) derived from them,
through real drms and sunpy: aiapy's where-clause example around the X1.5 flare of 2021-07-03."""

from __future__ import annotations

import io
import os
from pathlib import Path

import astropy.units as u
import drms
import numpy as np
import pytest
from astropy.io import fits
from sunpy.net import attrs as a
from sunpy.net import jsoc

from jsocsim.catalog import Catalog
from jsocsim.flares import (
    EUV_CHANNELS,
    FLARE_TABLE_ENV,
    flare_table,
    goes_flux,
    parse_table,
    short_fraction,
)
from jsocsim.server import Emulator
from jsocsim.timeslots import parse_time
from tests.emulator.helpers import EMAIL
from tests.emulators import server_config, sunpy_pointed_at

pytestmark = pytest.mark.emulator(emails=[EMAIL], staging_delay=0.05)

FLARE_QUERY = ("aia.lev1_euv_12s[2021-07-03T14:25:00Z-2021-07-03T14:35:00Z]"
               "[? EXPTIME<2.0 AND WAVELNTH=211 ?]")
QUIET_QUERY = FLARE_QUERY.replace("2021-07-03", "2021-07-05")
FLARE_WINDOW = "aia.lev1_euv_12s[2021-07-03T14:25:00Z-2021-07-03T14:35:00Z]"
QUIET_WINDOW = FLARE_WINDOW.replace("2021-07-03", "2021-07-05")
AEC_KEYS = "T_REC,WAVELNTH,EXPTIME,AIMGSHCE,AECTYPE,AECMODE,AIAECENF"


@pytest.fixture(scope="module")
def client(shared_emu: Emulator) -> drms.Client:
    return drms.Client(server_config(shared_emu.base_url), email=EMAIL)


@pytest.mark.unit
def test_the_builtin_table_holds_the_known_flares() -> None:
    table = flare_table()
    assert max(table.flares, key=lambda f: f.flux).goes_class == "X9.3"  # 2017-09-06
    assert all(f.goes_class[0] in "MX" and f.start <= f.peak <= f.end for f in table.flares)
    assert len({(f.start, f.goes_class) for f in table.flares}) == len(table)
    (x15,) = table.between(parse_time("2021-07-03T14:25:00Z"), parse_time("2021-07-03T14:35Z"))
    assert (x15.goes_class, x15.noaa_ar) == ("X1.5", 12838)
    assert (x15.start, x15.peak, x15.end) == tuple(
        parse_time(f"2021-07-03T{hm}Z") for hm in ("14:18", "14:29", "14:34"))
    assert table.between(parse_time("2021-07-05T00:00Z"), parse_time("2021-07-06T00:00Z")) == []


@pytest.mark.unit
def test_an_operator_table_replaces_the_builtin_one(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    table_file = tmp_path / "flares.csv"
    table_file.write_text("# mine\nstart,peak,end,goes_class,noaa_ar\n"
                          "2015-03-11T16:11Z,2015-03-11T16:22Z,2015-03-11T16:29Z,X2.1,12297\n")
    monkeypatch.setenv(FLARE_TABLE_ENV, str(table_file))
    flare_table.cache_clear()
    try:
        (only,) = flare_table().flares
        assert (only.goes_class, only.noaa_ar) == ("X2.1", 12297)
        table_file.write_text("start,peak,end,goes_class,noaa_ar\nyesterday,,,X1,\n")
        flare_table.cache_clear()
        with pytest.raises(ValueError, match="flare table data row 1"):
            flare_table()
    finally:
        monkeypatch.delenv(FLARE_TABLE_ENV)
        flare_table.cache_clear()


@pytest.mark.unit
def test_cli_refuses_an_unreadable_flare_table(tmp_path: Path) -> None:
    from jsocsim.__main__ import main
    try:
        assert main(["--data-dir", str(tmp_path), "--flare-table",
                     str(tmp_path / "missing.csv")]) == 2
    finally:
        os.environ.pop(FLARE_TABLE_ENV, None)
        flare_table.cache_clear()


@pytest.mark.unit
def test_flux_lookup_and_short_exposure_scale() -> None:
    table = flare_table()
    at = np.array([parse_time(t) for t in ("2021-07-03T14:17:59Z", "2021-07-03T14:18:00Z",
                                            "2021-07-03T14:34:00Z", "2021-07-03T14:34:01Z")])
    assert table.peak_flux(at).tolist() == [0.0, pytest.approx(1.5e-4),
                                            pytest.approx(1.5e-4), 0.0]
    assert goes_flux("M2.7") == pytest.approx(2.7e-5)
    fractions = [short_fraction(flux) for flux in (1e-5, 1e-4, 1e-3, 1.0, 0.0)]
    assert fractions[0] == pytest.approx(0.3) and fractions[1] == pytest.approx(0.3 / 10**0.5)
    assert fractions[0] > fractions[1] > fractions[2] > fractions[3] == 0.02  # the floor
    assert fractions[4] == 1.0
    with pytest.raises(ValueError, match="GOES class"):
        goes_flux("Q1")
    with pytest.raises(ValueError, match="row 1"):
        parse_table(["start,peak,end,goes_class,noaa_ar", "2021-07-03T14:18Z,,x,X1.5,"])


def test_aiapy_where_clause_finds_short_211_exposures_in_the_flare(client: drms.Client) -> None:
    keys = client.query(FLARE_QUERY, key=AEC_KEYS)
    assert len(keys) >= 20  # every other 12 s image from 14:25 to the flare's end at 14:34
    assert (keys.WAVELNTH == 211).all() and (keys.EXPTIME < 2.0).all()
    assert ((keys.EXPTIME * 1000).round() == keys.AIMGSHCE).all()
    assert (keys.AECMODE == "ON").all() and (keys.AECTYPE == 2).all()
    assert (keys.AIAECENF == 1).all()


def test_same_query_on_a_quiet_day_finds_none(client: drms.Client) -> None:
    assert len(client.query(QUIET_QUERY, key="T_REC,EXPTIME")) == 0
    quiet = client.query(QUIET_WINDOW + "[211]", key="EXPTIME,AIMGSHCE")
    assert len(quiet) == len(client.query(FLARE_WINDOW + "[211]", key="T_REC")) > 40
    assert (quiet.EXPTIME > 2.89).all() and (quiet.AIMGSHCE == 2901).all()


def test_during_the_flare_euv_alternates_short_and_normal(client: drms.Client) -> None:
    keys = client.query(FLARE_WINDOW, key="T_REC,WAVELNTH,EXPTIME")
    assert len(keys) == len(client.query(QUIET_WINDOW, key="T_REC"))  # counts do not change
    base = Catalog.load().get("aia.lev1_euv_12s").keyword("EXPTIME").params["base"]
    in_flare = keys[keys.T_REC <= "2021-07-03T14:34:00Z"]
    for wave, rows in in_flare.groupby("WAVELNTH"):
        normal = float(base[str(wave)])
        short = 0.5 * normal > rows.EXPTIME
        assert wave in EUV_CHANNELS and 0.4 <= short.mean() <= 0.6, wave
        assert np.allclose(rows.EXPTIME[~short], normal, rtol=1e-3)
        assert (np.diff(short.to_numpy().astype(int)) != 0).all()  # short, normal, short...
    after = keys[keys.T_REC > "2021-07-03T14:34:12Z"]
    assert len(after) and all(np.isclose(r.EXPTIME, float(base[str(r.WAVELNTH)]), rtol=1e-3)
                              for r in after.itertuples())


def test_fits_headers_carry_the_same_exposure(client: drms.Client, tmp_path: Path) -> None:
    ds = "aia.lev1_euv_12s[2021-07-03T14:30:00Z/24s][211]{image}"
    keys = client.query(ds, key="T_REC,EXPTIME,AIMGSHCE")
    request = client.export(ds, method="url", protocol="fits")
    assert request.wait(timeout=30, sleep=0.05)
    downloaded = request.download(tmp_path)
    seen = []
    for path in downloaded.download:
        with fits.open(io.BytesIO(Path(path).read_bytes())) as hdul:
            header = hdul[1].header
        row = keys[header["T_REC"] == keys.T_REC].iloc[0]
        assert header["EXPTIME"] == pytest.approx(row.EXPTIME)
        assert header["AIMGSHCE"] == row.AIMGSHCE == round(header["EXPTIME"] * 1000)
        assert header["AECMODE"] == "ON" and header["AECTYPE"] == 2
        seen.append(header["EXPTIME"] < 2.0)
    assert len(seen) == 2 and sorted(seen) == [False, True]  # one short, one normal


def test_sunpy_keyword_filter_expresses_the_query(shared_emu: Emulator) -> None:
    with sunpy_pointed_at(shared_emu.base_url):
        client = jsoc.JSOCClient()
        common = [a.jsoc.Series("aia.lev1_euv_12s"), a.Wavelength(211 * u.AA),
                  a.jsoc.Keyword("EXPTIME") < 2.0]
        found = client.search(a.Time("2021-07-03T14:25:00", "2021-07-03T14:35:00"), *common)
        quiet = client.search(a.Time("2021-07-05T14:25:00", "2021-07-05T14:35:00"), *common)
    assert len(found) >= 20 and (np.asarray(found["WAVELNTH"]) == 211).all()
    assert len(quiet) == 0
