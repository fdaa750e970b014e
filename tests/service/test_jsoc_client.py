"""JsocClient against the jsocsim emulator (real HTTP on 127.0.0.1), plus a capture server for
exact transport shapes (string-valued JSON, non-JSON bodies, 503 + Retry-After, User-Agent)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from jsocsim import run_emulator
from service.download import fetch_file
from service.jsoc.client import ExportReply, JsocClient, build_items, user_agent
from service.jsoc.status import (
    JsocHttpError,
    JsocPendingLimitError,
    JsocPermanentError,
    JsocTooLargeError,
    JsocTransientError,
    StatusKind,
    classify_status,
    pending_request_ids,
)

EMAIL = "a@b.org"
RS_3M = "hmi.M_45s[2014.01.01_00:00_TAI/3m]"
STEP = 45.0  # hmi.M_45s cadence (docs/jsoc-protocol.md §9.1): /3m holds floor(180 / 45) records
EXPECTED_3M = int(180 // STEP)

pytestmark = pytest.mark.emulator(emails=[EMAIL, "x+y@b.org"], staging_delay=0.1,
                                  max_export_mb=10_000)


@pytest.fixture
async def jsoc(emu: Any) -> AsyncIterator[JsocClient]:
    async with JsocClient(emu.base_url) as client:
        yield client


async def wait_until_done(jsoc: JsocClient, request_id: str, deadline: float = 20.0
                          ) -> ExportReply:
    """Poll exp_status until the export is no longer pending (bounded by `deadline`)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        reply = await jsoc.exp_status(request_id)
        if reply.kind is not StatusKind.PENDING:
            return reply
        await asyncio.sleep(0.05)
    raise AssertionError(f"{request_id} still pending after {deadline}s")


def cgi_requests(emu: Any) -> int:
    return sum(c["cgi_requests"] for c in emu.stats()["clients"].values())


async def test_series_struct_is_parsed_and_cached(emu: Any, jsoc: JsocClient) -> None:
    meta = await jsoc.series_struct("hmi.M_45s")
    assert meta.name == "hmi.M_45s"
    t_rec, camera = meta.primekeys
    assert (t_rec.name, t_rec.slotted, t_rec.step, t_rec.is_time) == ("T_REC", True, STEP, True)
    assert t_rec.epoch and t_rec.epoch.startswith("1993.01.01")
    assert (camera.name, camera.slotted, camera.is_time) == ("CAMERA", False, False)
    assert "magnetogram" in meta.segment_names and "T_REC" in meta.keyword_names
    before = cgi_requests(emu)
    again = await jsoc.series_struct("HMI.m_45s[2014.01.01]{magnetogram}")
    assert again is meta and cgi_requests(emu) == before
    with pytest.raises(JsocPermanentError, match="status=1"):
        await jsoc.series_struct("hmi.no_such_series")


async def test_rs_summary_and_rs_list_agree(jsoc: JsocClient) -> None:
    assert await jsoc.rs_summary(RS_3M) == EXPECTED_3M
    listing = await jsoc.rs_list(RS_3M, keys=["T_REC"], segs=["magnetogram"])
    (t_rec,) = listing["keywords"]
    assert len(t_rec["values"]) == EXPECTED_3M == listing["count"]
    limited = await jsoc.rs_list(RS_3M, keys=["T_REC"], n=2)
    assert limited["keywords"][0]["values"] == t_rec["values"][:2]
    with pytest.raises(ValueError, match="at least one of keys, segs or links"):
        await jsoc.rs_list(RS_3M)


async def test_check_address(jsoc: JsocClient) -> None:
    assert await jsoc.check_address(EMAIL) == 2
    assert await jsoc.check_address("x+y@b.org") == 2  # '+' survives the double encoding
    assert await jsoc.check_address("nobody@example.com") == 4
    assert await jsoc.check_address("not-valid") == -2


async def test_quick_export_urls_download_as_is(emu: Any, jsoc: JsocClient,
                                                tmp_path: Path) -> None:
    reply = await jsoc.exp_request(RS_3M + "{magnetogram}", EMAIL, "url_quick", "as-is")
    assert reply.status == 0 and reply.is_quick and reply.request_id is None
    items = jsoc.export_items(reply)
    assert len(items) == EXPECTED_3M == reply.count
    for item, row in zip(items, reply.data, strict=True):
        assert item.url == emu.base_url + row.filename.lstrip("/")
        assert item.segment == "magnetogram" and "{" not in item.record
        assert item.filename.startswith("hmi.M_45s.2014") and item.filename.endswith(
            ".magnetogram.fits")
    async with aiohttp.ClientSession() as session:
        result = await fetch_file(session, items[0].url, tmp_path / items[0].filename)
    served = emu.manifest()[urlsplit(items[0].url).path]
    assert (result.sha256, result.size) == (served["sha256"], served["size"])


async def test_staged_fits_export_and_pending_limit(emu: Any, jsoc: JsocClient,
                                                    tmp_path: Path) -> None:
    first = await jsoc.exp_request(RS_3M + "{magnetogram}", EMAIL, "url", "fits")
    assert first.status in (1, 2) and first.request_id
    with pytest.raises(JsocPendingLimitError) as info:
        await jsoc.exp_request("hmi.M_45s[2014.01.02_00:00_TAI/3m]{magnetogram}", EMAIL,
                               "url", "fits")
    assert info.value.pending_ids == [first.request_id]
    assert info.value.kind is StatusKind.TRANSIENT and info.value.status == 7
    assert "pending export requests" in str(info.value)

    done = await wait_until_done(jsoc, first.request_id)
    assert done.status == 0 and done.dir and done.request_id == first.request_id
    items = jsoc.export_items(done, segments=["magnetogram"])
    assert len(items) == len(done.data) == EXPECTED_3M
    assert all(i.url == emu.base_url + done.dir.lstrip("/") + "/" + i.filename for i in items)
    assert all(i.segment == "magnetogram" for i in items)
    async with aiohttp.ClientSession() as session:
        for item in items[:2]:  # fits files pass the structure check
            result = await fetch_file(session, item.url, tmp_path / item.filename)
            assert result.sha256 == emu.manifest()[urlsplit(item.url).path]["sha256"]


async def test_too_large_and_permanent_errors(tmp_path: Path) -> None:
    async with run_emulator(tmp_path / "small", emails=[EMAIL], max_export_mb=1) as emu, \
            JsocClient(emu.base_url) as jsoc:
        with pytest.raises(JsocTooLargeError) as big:
            await jsoc.exp_request(RS_3M + "{magnetogram}", EMAIL, "url", "fits")
        assert big.value.status == 3 and big.value.size_mb and big.value.size_mb > 1
        assert big.value.count == EXPECTED_3M and "byte limit" in str(big.value)
        with pytest.raises(JsocPermanentError, match=r"status=4") as bad:
            await jsoc.exp_request("hmi.no_such[2014.01.01]", EMAIL, "url", "fits")
        assert bad.value.kind is StatusKind.PERMANENT
        with pytest.raises(JsocPermanentError, match="status=4"):
            await jsoc.exp_request(RS_3M, "stranger@example.com", "url", "fits")
        unknown = await jsoc.exp_status("JSOC_20990101_999", check=False)
        assert unknown.status == 4 and unknown.kind is StatusKind.PERMANENT and unknown.error


async def test_http_500_and_timeouts_are_transient(emu: Any) -> None:
    emu.set_faults(cgi_error_rate=1.0)
    async with JsocClient(emu.base_url) as jsoc:
        with pytest.raises(JsocHttpError) as info:
            await jsoc.rs_summary(RS_3M)
    assert info.value.http_status == 500 and info.value.retryable
    emu.set_faults(cgi_error_rate=0.0, slow_rate=1.0, slow_seconds=1.0)
    timeout = aiohttp.ClientTimeout(total=0.2)
    async with JsocClient(emu.base_url, timeout=timeout) as jsoc:
        with pytest.raises(JsocTransientError, match="timeout"):
            await jsoc.rs_summary(RS_3M)


# -- exact shapes from a capture server -------------------------------------------------------


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, list[web.Request], list[web.Response]]]:
    """A server that records requests and answers with queued responses."""
    seen: list[web.Request] = []
    answers: list[web.Response] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request)
        return answers.pop(0)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/", seen, answers
    await runner.cleanup()


async def test_string_valued_index_json_and_request_shape(capture: Any) -> None:
    base, seen, answers = capture
    index = {"version": "0.5", "requestid": "JSOC_20250101_042", "method": "url",
             "protocol": "fits", "count": "2", "size": "3", "dir": "/SUM9/D17/S00000",
             "status": "0", "data": [
                 {"record": "hmi.sharp_720s[4864][2014.11.30_00:00:00_TAI]",
                  "filename": "hmi.sharp_720s.4864.20141130_000000_TAI.continuum.fits"},
                 {"record": "hmi.sharp_720s[4864][2014.11.30_00:00:00_TAI]",
                  "filename": "NoDataFile"}]}
    answers.append(web.json_response(index))
    async with JsocClient(base) as jsoc:
        reply = await jsoc.exp_status("JSOC_20250101_042")
        items = jsoc.export_items(reply, segments=["magnetogram", "continuum"])
    assert (reply.status, reply.count, reply.size_mb) == (0, 2, 3)
    assert reply.missing == [reply.data[1]]
    assert items == [(index["data"][0]["record"], "continuum",
                      base + "SUM9/D17/S00000/" + index["data"][0]["filename"],
                      index["data"][0]["filename"])]
    request = seen[0]
    assert request.path == "/cgi-bin/ajax/jsoc_fetch"
    assert request.query["op"] == "exp_status" and request.query["requestid"] == reply.request_id
    assert request.headers["User-Agent"] == user_agent() and user_agent().startswith("jsoc-bulk/")


async def test_exp_request_parameters_follow_drms(capture: Any) -> None:
    base, seen, answers = capture
    answers.append(web.json_response({"status": 2, "requestid": "JSOC_20250101_001",
                                      "wait": "10", "rcount": 1, "size": 3}))
    async with JsocClient(base) as jsoc:
        reply = await jsoc.exp_request("hmi.M_45s[2014.01.01]", EMAIL, "url_quick", "fits",
                                       filenamefmt="{seriesname}.{segment}", process="0")
    query = seen[0].query
    assert query["method"] == "url"  # url_quick + fits becomes url, as in drms
    assert query["process=n"] == "0" and query["filenamefmt"] == "{seriesname}.{segment}"
    assert (query["notify"], query["protocol"], query["format"]) == (EMAIL, "fits", "json")
    assert (reply.status, reply.wait, reply.kind) == (2, 10.0, StatusKind.PENDING)


async def test_garbled_and_throttled_replies(capture: Any) -> None:
    base, _, answers = capture
    answers.append(web.Response(text="<html>proxy error</html>"))
    answers.append(web.Response(status=503, text="busy", headers={"Retry-After": "12"}))
    answers.append(web.Response(status=404, text="gone"))
    async with JsocClient(base) as jsoc:
        with pytest.raises(JsocTransientError, match="not JSON"):
            await jsoc.rs_summary("x")
        with pytest.raises(JsocHttpError) as busy:
            await jsoc.rs_summary("x")
        with pytest.raises(JsocHttpError) as gone:
            await jsoc.rs_summary("x")
    assert (busy.value.retry_after, busy.value.kind) == (12.0, StatusKind.TRANSIENT)
    assert gone.value.kind is StatusKind.PERMANENT and not gone.value.retryable


@pytest.mark.unit
def test_status_classification_and_pending_ids() -> None:
    table = {0: "done", 1: "pending", 2: "pending", 3: "too_large", 4: "permanent",
             5: "expired", 6: "transient", 7: "transient", 25: "permanent", 99: "permanent"}
    assert {s: str(classify_status(s)) for s in table} == table
    message = ("User a@b.org has 2 pending export requests (JSOC_20250101_042, "
               "JSOC_20250101_043_IN); please wait until at least one request has completed.")
    assert pending_request_ids(message) == ["JSOC_20250101_042", "JSOC_20250101_043_IN"]
    assert pending_request_ids("There are too many requests from a@b.org") == []
    assert pending_request_ids(None) == []


@pytest.mark.unit
def test_tar_and_quick_item_building() -> None:
    def url(path: str) -> str:
        return "http://h/" + path.lstrip("/")

    tar = ExportReply.from_json({"status": 0, "method": "url-tar", "requestid": "JSOC_1",
                                 "dir": "/SUM1/D2/S0", "tarfile": "/SUM1/D2/S0/JSOC_1.tar",
                                 "data": [{"record": "r", "filename": "f"}]})
    assert build_items(tar, url) == [("", None, "http://h/SUM1/D2/S0/JSOC_1.tar", "JSOC_1.tar"),
                                     ("r", None, "http://h/SUM1/D2/S0/JSOC_1.tar#f", "f")]
    quick = ExportReply.from_json(json.loads(json.dumps({
        "status": 0, "requestid": "", "dir": "", "count": 2, "data": [
            {"record": "hmi.V_45s[2016.04.01_00:00:00_TAI][2]{Dopplergram}",
             "filename": "/SUM58/D803708321/S00008/Dopplergram.fits"},
            {"record": "warning=No FITS files were exported.", "filename": ""}]})))
    (item,) = build_items(quick, url)
    assert item.filename == "hmi.V_45s.20160401_000000_TAI.2.Dopplergram.fits"
    assert item.url == "http://h/SUM58/D803708321/S00008/Dopplergram.fits"
    with pytest.raises(ValueError, match="not finished"):
        build_items(ExportReply.from_json({"status": "1"}), url)
    digest = hashlib.sha256(b"").hexdigest()
    assert len(digest) == 64
