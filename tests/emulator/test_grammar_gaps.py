"""The first round's open gaps, through real drms and sunpy: NoDataFile and warning rows,
`$`/`^` as range ends, links into other catalog series, `[? ?]` versus `[! !]` over record
versions, and jpg/mpg/mp4 exports."""

from __future__ import annotations

import functools
import json
import urllib.error
import urllib.request
from pathlib import Path

import drms
import pytest
from sunpy.net import Fido, jsoc
from sunpy.net import attrs as a

from jsocsim.records import RecordsConfig
from jsocsim.server import Emulator
from tests.emulator.helpers import EMAIL, EXPORT_OPTIONS
from tests.emulators import server_config

pytestmark = pytest.mark.emulator(**EXPORT_OPTIONS)

M45 = "hmi.M_45s[2014.01.01_00:00:00_TAI/10m]{magnetogram}"  # 13 records
FLOWS = "hmi.rdVflows_fd15_frame[2150]"
NOW = "2014.01.02_00:00:00_TAI"


def client_for(emu: Emulator) -> drms.Client:
    return drms.Client(server_config(emu.base_url), email=EMAIL)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def finished(request: drms.ExportRequest) -> drms.ExportRequest:
    assert request.wait(timeout=60, sleep=0.05) and request.has_succeeded()
    return request


@pytest.fixture
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """drms ExportRequest.wait polls every 0.05 s (sunpy calls it with its own sleep)."""
    monkeypatch.setattr(drms.ExportRequest, "wait",
                        functools.partialmethod(drms.ExportRequest.wait, sleep=0.05))


# ---- missing files: NoDataFile rows and the "no FITS files" warning ---------------------------
@pytest.mark.emulator(records=RecordsConfig(missing_file_fraction=0.4))
def test_missing_files_are_nodatafile_rows_in_as_is_exports(
        emu: Emulator, tmp_path: Path) -> None:
    client = client_for(emu)
    paths = client.query(M45, seg="magnetogram").magnetogram  # rs_list does not stat files
    assert len(paths) == 13 and all(p.startswith("/SUM") for p in paths)
    gone = {p for p in paths if status_of(emu.base_url + p.lstrip("/")) == 404}
    assert 0 < len(gone) < 13 and all(status_of(emu.base_url + p.lstrip("/")) == 200
                                      for p in set(paths) - gone)
    r = finished(client.export(M45, method="url", protocol="as-is"))
    rows = list(r.data.filename)
    assert len(rows) == 13 and rows.count("NoDataFile") == len(gone)
    index = json.loads(urllib.request.urlopen(r.request_url + "/index.json").read())
    assert int(index["count"]) == 13 - len(gone)
    assert len(r.urls) == 13 - len(gone)  # drms drops NoDataFile rows
    got = r.download(tmp_path)
    assert got.download.notna().all()
    fits = finished(client.export(M45, method="url", protocol="fits"))
    assert len(fits.data) == 13 - len(gone)  # jsoc_export_as_fits skips missing files


@pytest.mark.emulator(records=RecordsConfig(missing_file_fraction=1.0))
def test_fits_export_without_any_file_reports_the_warning_row(
        emu: Emulator, tmp_path: Path) -> None:
    client = client_for(emu)
    r = finished(client.export(M45, method="url", protocol="fits"))
    (record,) = r.data.record
    assert record.startswith("warning=No FITS files were exported")
    assert list(r.data.filename) == [""]
    assert r.download(tmp_path).download.isna().all()
    quick = client.export(M45)  # url_quick lists the SUMS paths without looking at them
    assert quick.has_succeeded() and len(quick.urls) == 13
    assert quick.download(tmp_path).download.isna().all()


@pytest.mark.emulator(records=RecordsConfig(missing_file_fraction=0.4))
def test_sunpy_fetch_sees_missing_files_as_jsoc_serves_them(
        emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        quick_polls: None) -> None:
    monkeypatch.setitem(drms.config._server_configs, "jsoc",
                        server_config(emu.base_url, name="jsoc"))
    window = a.Time("2014-01-01T00:00:00", "2014-01-01T00:09:00")  # 13 slots, both ends in
    series, seg = a.jsoc.Series("hmi.M_45s"), a.jsoc.Segment("magnetogram")
    found = Fido.search(window, series, seg, a.jsoc.Notify(EMAIL), a.jsoc.Protocol("as-is"))
    assert found.file_num == 13
    quick = Fido.fetch(found, path=str(tmp_path / "quick" / "{file}"), progress=False,
                       max_conn=1, sleep=0)
    missing = len(quick.errors)
    assert 0 < missing < 13 and len(quick) == 13 - missing  # 404s, as sunpy #3735 reports
    client = jsoc.JSOCClient()
    fits_found = client.search(window, series, seg, a.jsoc.Notify(EMAIL))
    files = client.fetch(fits_found, path=str(tmp_path / "fits"), progress=False, sleep=0)
    assert not files.errors and len(files) == 13 - missing


# ---- $ and ^ as range ends ------------------------------------------------------------------
@pytest.mark.emulator(clock_start=NOW)
def test_dollar_and_caret_as_range_endpoints(emu: Emulator,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_for(emu)
    tail = client.query("hmi.M_45s[2014.01.01_23:58:00_TAI-$]", key="T_REC")
    assert list(tail.T_REC) == ["2014.01.01_23:57:45_TAI", "2014.01.01_23:58:30_TAI",
                                "2014.01.01_23:59:15_TAI", "2014.01.02_00:00:00_TAI"]
    assert list(client.query("hmi.M_45s[$]", key="T_REC").T_REC) == [tail.T_REC.iloc[-1]]
    head = client.query("hmi.M_45s[^-2010.04.30_00:01:30_TAI]", key="T_REC")
    assert list(head.T_REC) == ["2010.04.30_00:00:00_TAI", "2010.04.30_00:00:45_TAI",
                                "2010.04.30_00:01:30_TAI"]
    assert list(client.query("hmi.M_45s[^]", key="T_REC").T_REC) == [head.T_REC.iloc[0]]
    aia = client.query("aia.lev1_euv_12s[$][304-$]", key="WAVELNTH")
    assert list(aia.WAVELNTH) == [304, 335]
    flows = client.query("hmi.rdVflows_fd15_frame[2140-$][$]", key="CarrRot,CMLon")
    assert list(flows.CarrRot) == list(range(2140, 2146)) and set(flows.CMLon) == {360.0}
    monkeypatch.setitem(drms.config._server_configs, "jsoc",
                        server_config(emu.base_url, name="jsoc"))
    found = Fido.search(a.jsoc.Series("hmi.M_45s"),
                        a.jsoc.PrimeKey("T_REC", "2014.01.01_23:58:00_TAI-$"))
    assert list(found[0]["T_REC"]) == list(tail.T_REC)


# ---- links ------------------------------------------------------------------------------------
@pytest.mark.emulator(clock_start=NOW)
def test_links_resolve_into_catalog_series(emu: Emulator) -> None:
    client = client_for(emu)
    keys, links = client.query("hmi.sharp_720s[][2014.01.01_00:00:00_TAI]", key="HARPNUM",
                               link="MHARP,BHARP")
    assert len(keys) > 0
    for harpnum, mharp, bharp in zip(keys.HARPNUM, links.MHARP, links.BHARP, strict=True):
        assert mharp == f"hmi.Mharp_720s[{harpnum}][2014.01.01_00:00:00_TAI]"
        assert bharp == f"hmi.Bharp_720s[{harpnum}][2014.01.01_00:00:00_TAI]"
        target = client.query(mharp, key="HARPNUM", seg="bitmap")
        assert list(target[0].HARPNUM) == [harpnum] and target[1].bitmap[0].endswith("bitmap.fits")
    cea = client.query("hmi.sharp_cea_720s[][2014.01.01_00:00:00_TAI]", key="HARPNUM")
    assert list(cea.HARPNUM) == list(keys.HARPNUM)  # one HARP family


# ---- [? ?] versus [! !] -----------------------------------------------------------------------
@pytest.mark.emulator(clock_start="2015.01.01_00:00:00_TAI")
def test_bang_where_returns_every_version(emu: Emulator) -> None:
    client = client_for(emu)
    keys = "CMLon,Module,*recnum*"
    latest = client.query(f"{FLOWS}[? CarrRot=2150 ?]", key=keys)
    every = client.query(f"{FLOWS}[! CarrRot=2150 !]", key=keys)
    plain = client.query(FLOWS, key=keys)
    assert len(latest) == 24 and latest.CMLon.is_unique
    assert list(latest["*recnum*"]) == list(plain["*recnum*"])
    assert len(every) > 24 and not every.CMLon.is_unique
    for _, versions in every.groupby("CMLon"):
        if len(versions) == 2:  # reprocessed: the newer record has the higher recnum
            old, new = versions.sort_values("*recnum*").Module
            assert (old, new) == ("rdvinv v 0.8", "rdvinv v 1.0")
            assert versions["*recnum*"].max() in set(latest["*recnum*"])
    # prime-key logic picks the newest version *that matches* the condition
    old = client.query(f"{FLOWS}[? Module='rdvinv v 0.8' ?]", key=keys)
    assert len(old) == 24 and set(old.Module) == {"rdvinv v 0.8"}
    assert client.query(f"{FLOWS}[! CarrRot=2150 !]", key="CMLon").shape[0] == len(every)
    summary = client._json.rs_summary(f"{FLOWS}[! CarrRot=2150 !]")
    assert summary["count"] == len(every)


# ---- jpg / mpg / mp4 ---------------------------------------------------------------------------
def test_jpg_export_gives_one_image_per_record(emu: Emulator,
                                               tmp_path: Path) -> None:
    client = client_for(emu)
    r = finished(client.export("hmi.M_45s[2014.01.01_00:00:00_TAI/3m]{magnetogram}",
                               method="url", protocol="jpg",
                               protocol_args={"ct": "grey.sao", "scaling": "minmax"}))
    assert r.protocol == "jpg" and len(r.urls) == 4
    assert all(f.endswith(".jpg") for f in r.data.filename)
    assert list(r.data.record) == [f"hmi.M_45s[2014.01.01_00:{t}_TAI][2]"
                                   for t in ("00:00", "00:45", "01:30", "02:15")]
    for path in r.download(tmp_path).download:
        assert Path(path).read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG start of image


@pytest.mark.filterwarnings("ignore:A value is being set on a copy")  # drms's own row blanking
@pytest.mark.parametrize("protocol", ["mp4", "mpg"])
def test_movie_export_lists_the_movie_first(emu: Emulator, tmp_path: Path,
                                            protocol: str) -> None:
    client = client_for(emu)
    r = finished(client.export("aia.lev1_euv_12s[2014.01.01_00:00:00_TAI/1m][171]{image}",
                               method="url", protocol=protocol))
    assert r.data.record.iloc[0] == "movie of the following data"  # drms blanks it in urls
    urls = r.urls
    assert urls.filename.iloc[0] == f"aia.lev1_euv_12s.{protocol}"
    assert len(urls) == 1 + 5 and all(f.endswith(".jpg") for f in urls.filename.iloc[1:])
    got = r.download(tmp_path, index=0)
    movie = Path(got.download.iloc[0]).read_bytes()
    assert movie[4:8] == b"ftyp" if protocol == "mp4" else movie[:4] == b"\x00\x00\x01\xba"


def test_unknown_protocol_is_refused_with_the_accepted_list(emu: Emulator) -> None:
    query = ("op=exp_request&ds=hmi.M_45s%5B2014.01.01_TAI%5D&method=url&protocol=png"
             f"&notify={EMAIL}")
    reply = json.loads(urllib.request.urlopen(
        emu.base_url + "cgi-bin/ajax/jsoc_fetch?" + query, timeout=30).read())
    assert reply["status"] == 4 and "png" in reply["error"] and "jpg|mpg|mp4" in reply["error"]
    bad = query.replace("protocol=png", "protocol=jpg,scaling=FANCY")
    reply = json.loads(urllib.request.urlopen(
        emu.base_url + "cgi-bin/ajax/jsoc_fetch?" + bad, timeout=30).read())
    assert reply["status"] == 4 and "MINMAX" in reply["error"]
