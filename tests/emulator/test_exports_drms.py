"""Exports through the real drms client: url_quick/as-is, url/fits, url-tar, processing,
index files and the exp_status field sets (docs/jsoc-protocol.md §3.8-§4.4)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import drms
import pytest
from astropy.io import fits

from jsocsim.catalog import Catalog
from jsocsim.fitsgen import fits_keyword_name
from jsocsim.server import Emulator
from tests.emulator.helpers import (
    EMAIL,
    EXPORT_OPTIONS,
    OTHER,
    get,
    jsoc_fetch,
    poll_until_done,
)
from tests.emulators import server_config

pytestmark = pytest.mark.emulator(**EXPORT_OPTIONS)
M45 = "hmi.M_45s[2014.01.01_00:00:00_TAI/3m]"  # 4 records (floor(180/45))
SHARP = "hmi.sharp_720s[4864][2014.11.30_00:00_TAI]{continuum, magnetogram}"


@pytest.fixture
def client(emu: Emulator) -> drms.Client:
    return drms.Client(server_config(emu.base_url), email=EMAIL)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_matches_manifest(emu: Emulator, url_path: str, data: bytes) -> None:
    entry = emu.manifest()[url_path]
    assert entry == {"size": len(data), "sha256": sha256(data)}


def test_url_quick_as_is_lists_sums_paths_at_once(emu: Emulator, client: drms.Client,
                                                  tmp_path: Path) -> None:
    ds = M45 + "{magnetogram}"
    listed = client.query(ds, seg="magnetogram")
    request = client.export(ds, method="url_quick", protocol="as-is")
    assert request.id is None and request.status == 0  # answered without staging
    assert list(request.data.filename) == list(listed.magnetogram)
    assert all(r.endswith("{magnetogram}") for r in request.data.record)
    assert request._d["count"] == request._d["rcount"] == 4
    per_file = Catalog.load().get("hmi.M_45s").segment("magnetogram").size
    assert request._d["size"] == 4 * per_file // 2**20  # survey of catalog sizes, in MB
    out = tmp_path / "quick"
    out.mkdir()
    downloaded = request.download(out)
    for path, url in zip(downloaded.download, downloaded.url, strict=True):
        data = Path(path).read_bytes()
        assert_matches_manifest(emu, urllib.parse.urlparse(url).path, data)
        with fits.open(io.BytesIO(data)) as hdul:
            assert "T_REC" not in hdul[1].header  # SUMS files carry no record keywords


def test_url_fits_headers_match_rs_list(emu: Emulator, client: drms.Client,
                                        tmp_path: Path) -> None:
    keys = client.query(SHARP, key="**ALL**")
    raw = client.query(SHARP, key="QUALITY,CAMERA", convert_numeric=False).iloc[0]
    request = client.export(SHARP, method="url", protocol="fits")
    assert request.status == 2 and request.id.startswith("JSOC_")
    assert request.wait(timeout=30, sleep=0.05)
    assert request.protocol == "fits" and request.dir.startswith("/SUM")
    assert list(request.data.filename) == [
        "hmi.sharp_720s.4864.20141130_000000_TAI.continuum.fits",
        "hmi.sharp_720s.4864.20141130_000000_TAI.magnetogram.fits"]
    assert set(request.data.record) == {"hmi.sharp_720s[4864][2014.11.30_00:00:00_TAI]"}
    downloaded = request.download(tmp_path)
    row = keys.iloc[0]
    for path in downloaded.download:
        data = Path(path).read_bytes()
        assert_matches_manifest(emu, f"{request.dir}/{Path(path).name}", data)
        with fits.open(io.BytesIO(data)) as hdul:
            header = hdul[1].header
        compared = 0
        for name, value in row.items():
            card = fits_keyword_name(name).removeprefix("HIERARCH ")
            if isinstance(value, float) and math.isnan(value):
                continue  # MISSING, or a hex string pandas' string dtype keeps drms from parsing
            assert card in header or name.startswith("cparms_sg") or name.endswith(
                ("_bzero", "_bscale")), name
            if card in header:
                compared += 1
                assert header[card] == value, name
        assert compared >= 20
        assert header["QUALITY"] == int(raw["QUALITY"], 16)  # rs_list prints QUALITY in hex
        assert raw["CAMERA"] == "MISSING" and "CAMERA" not in header


def test_index_files_and_status_fields(emu: Emulator, client: drms.Client) -> None:
    request = client.export(M45 + "{magnetogram}", method="url", protocol="fits")
    assert set(request._d) == {"status", "requestid", "method", "protocol", "wait", "rcount",
                               "size"}
    assert request.wait(timeout=30, sleep=0.05)
    done = jsoc_fetch(emu, f"op=exp_status&requestid={request.id}")
    header = {k: v for k, v in done.items() if k != "data"}
    assert all(isinstance(v, str) for v in header.values())  # index.json: strings only
    assert done["status"] == "0" and done["count"] == "4" and done["version"] == "0.5"
    assert done["keywords"] == "**IN FITS FILES**" and "tarfile" not in done
    index = json.loads(get(emu, f"{done['dir']}/index.json"))
    assert index == done
    text = get(emu, f"{done['dir']}/index.txt").decode()
    assert f"requestid={request.id}" in text and "# DATA" in text
    assert "# PROCESSING" not in text
    assert all(row["filename"] in text for row in done["data"])
    assert request.id.encode() in get(emu, f"{done['dir']}/index.html")


def test_url_tar_holds_files_and_index(emu: Emulator, client: drms.Client,
                                       tmp_path: Path) -> None:
    request = client.export(SHARP, method="url-tar", protocol="fits")
    assert request.wait(timeout=30, sleep=0.05)
    assert request.tarfile == f"{request.dir}/{request.id}.tar"
    downloaded = request.download(tmp_path)
    data = Path(downloaded.download[0]).read_bytes()
    assert_matches_manifest(emu, request.tarfile, data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())
    assert set(names) == {*request.data.filename, "index.json", "index.txt", "index.html"}
    assert index["tarfile"] == request.tarfile
    payload = {p for p in emu.manifest() if p.startswith(request.dir + "/")}
    assert payload == {f"{request.dir}/{n}" for n in ("index.json", "index.txt", "index.html",
                                                      f"{request.id}.tar")}


def test_staged_as_is_has_segment_records_and_keywords_file(emu: Emulator,
                                                            client: drms.Client) -> None:
    request = client.export(M45 + "{magnetogram}", method="url", protocol="as-is")
    assert request.wait(timeout=30, sleep=0.05)
    assert request._d["version"] == "1" and request._d["wait"] == "0"
    assert all(r.endswith("{magnetogram}") for r in request.data.record)
    keywords = get(emu, request.keywords).decode()
    assert keywords.count("# hmi.M_45s[") == 4 and "QUALITY=0x" in keywords
    quick = client.export(M45 + "{magnetogram}", method="url_quick", protocol="as-is")
    for staged, stored in zip(request.data.filename, quick.data.filename, strict=True):
        assert get(emu, f"{request.dir}/{staged}") == get(emu, stored)  # same bytes as SUMS


@pytest.mark.parametrize(("process", "series", "segment_file"), [
    ({"im_patch": {"t_ref": "2014-01-01T00:00:00", "t": 0, "r": 0, "c": 0,
                   "locunits": "arcsec", "boxunits": "arcsec", "x": -517.2, "y": -246,
                   "width": 345.6, "height": 345.6}},
     "aia.lev1_euv_12s[2014-01-01T00:00:00Z/1m@12s][171]{image}", "image.fits"),
    ({"rebin": {"method": "boxcar", "scale": 0.25}},
     "hmi.M_720s[2020.10.17_22:12:00_TAI/24m]{magnetogram}", "magnetogram.fits"),
])
def test_processing_makes_smaller_mod_records(emu: Emulator, client: drms.Client,
                                              tmp_path: Path, process: dict[str, Any],
                                              series: str, segment_file: str) -> None:
    plain = client.export(series, method="url", protocol="fits")
    assert plain.wait(timeout=30, sleep=0.05)
    done = client.export(series, method="url", protocol="fits", process=process)
    assert done.wait(timeout=30, sleep=0.05)
    base = series.split("[", 1)[0].lower()
    assert all(r.lower().startswith(base + "_mod[") for r in done.data.record)
    assert all(f.endswith(segment_file) for f in done.data.filename)
    assert len(done.data) == len(plain.data) > 0
    with fits.open(io.BytesIO(get(emu, f"{done.dir}/{done.data.filename[0]}"))) as hdul:
        cut = hdul[1].data.shape
    with fits.open(io.BytesIO(get(emu, f"{plain.dir}/{plain.data.filename[0]}"))) as hdul:
        full = hdul[1].data.shape
    assert cut[0] < full[0] / 3 and cut[1] < full[1] / 3
    text = get(emu, f"{done.dir}/index.txt").decode()
    assert "# PROCESSING" in text and next(iter(process)) in text


def test_both_process_encodings_are_the_same_request(emu: Emulator) -> None:
    """process%3Dn=… (drms) and process=n=… (JSOC) mean the same: the second is a duplicate."""
    ds = urllib.parse.quote("hmi.M_720s[2020.10.17_22:12:00_TAI/24m]{magnetogram}")
    common = f"op=exp_request&ds={ds}&method=url&protocol=fits&requestor=x&requester=y"
    steps = urllib.parse.quote("0|rebin,method=boxcar,scale=0.5")
    first = jsoc_fetch(emu, f"{common}&notify={urllib.parse.quote(EMAIL)}&process%3Dn={steps}")
    assert first["status"] == 2
    done = poll_until_done(emu, first["requestid"])
    second = jsoc_fetch(emu, f"{common}&notify={urllib.parse.quote(OTHER)}&process=n={steps}")
    assert second["status"] == 2 and second["requestid"] == first["requestid"]
    assert all(r["record"].startswith("hmi.M_720s_mod[") for r in done["data"])


def test_request_errors(emu: Emulator, client: drms.Client) -> None:
    bad_series = client.export("hmi.nosuch[2014.01.01_TAI]", method="url", protocol="fits")
    with pytest.raises(drms.DrmsExportError, match=r"Cannot export series 'hmi\.nosuch' - it does"):
        bad_series.wait()
    unregistered = jsoc_fetch(emu, "op=exp_request&ds=hmi.M_45s&notify=nobody%40example.org")
    assert unregistered["status"] == 4
    assert unregistered["error"].startswith("Cannot process your request. email address")
    assert jsoc_fetch(emu, f"op=exp_request&ds={urllib.parse.quote(M45)}")["status"] == 4
    # jpg/mpg/mp4 are served (test_grammar_gaps); drms itself refuses other protocols
    bad_protocol = jsoc_fetch(emu, f"op=exp_request&ds={urllib.parse.quote(M45)}&method=url"
                                   f"&protocol=png&notify={urllib.parse.quote(EMAIL)}")
    assert bad_protocol["status"] == 4 and "accepted: as-is, fits" in bad_protocol["error"]
    assert jsoc_fetch(emu, "op=exp_status") == {"status": 4, "error": "RequestID must be provided"}
    assert jsoc_fetch(emu, "op=exp_status&requestid=nope")["error"] == \
        "Bad RequestID 'nope' provided."
    unknown = jsoc_fetch(emu, "op=exp_status&requestid=JSOC_20200101_999")
    assert unknown["status"] == 4 and "JSOC_20200101_999" in unknown["error"]
    assert jsoc_fetch(emu, "op=exp_nosuch")["status"] == 4


def test_format_txt(emu: Emulator) -> None:
    text = get(emu, "cgi-bin/ajax/jsoc_fetch?op=exp_status&format=txt").decode()
    assert text.splitlines() == ["status=4", "error=RequestID must be provided"]


@pytest.mark.emulator(emails=[EMAIL], staging_delay=100)
def test_status_moves_2_then_1_then_0_on_the_clock(emu: Emulator) -> None:
    client = drms.Client(server_config(emu.base_url), email=EMAIL)
    export = client.export(M45 + "{magnetogram}", method="url", protocol="fits", n=2)
    assert (export.status, export._d["wait"], export._d["rcount"]) == (2, 100, 2)
    emu.advance_clock(40)
    queued = jsoc_fetch(emu, f"op=exp_status&requestid={export.id}")
    assert queued["status"] == 2 and 59 <= queued["wait"] <= 60
    emu.advance_clock(20)
    running = jsoc_fetch(emu, f"op=exp_status&requestid={export.id}")
    assert running == {"status": 1, "requestid": export.id, "method": "url",
                       "protocol": "fits", "wait": running["wait"], "rcount": 0,
                       "size": export._d["size"]}
    assert 39 <= running["wait"] <= 40
    assert not export.has_finished()
    emu.advance_clock(40)
    assert export.wait(timeout=30, sleep=0.05)
    assert len(export.data) == 2  # process=n=2 kept the first two records


def test_post_form_is_accepted(emu: Emulator) -> None:
    form = urllib.parse.urlencode({"op": "exp_request", "ds": M45 + "{magnetogram}",
                                   "notify": EMAIL, "method": "url_quick", "protocol": "as-is",
                                   "format": "json"}).encode()
    url = emu.base_url + "cgi-bin/ajax/jsoc_fetch"
    with urllib.request.urlopen(url, data=form, timeout=30) as response:
        reply = json.loads(response.read())
    assert reply["status"] == 0 and reply["count"] == 4 and reply["requestid"] == ""
