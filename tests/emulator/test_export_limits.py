"""JSOC's export limits, observable through drms and raw jsoc_fetch calls: one pending export
per email and ten per IP (status 7), the pending timeout, the size limit (status 3), the
24-hour duplicate rule, the 7-day expiry (status 5), daily request ids, the quality filter."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse

import drms
import pytest

from jsocsim.catalog import Catalog
from jsocsim.records import RecordsConfig
from jsocsim.server import Emulator
from tests.emulator.helpers import (
    EMAIL,
    EXPORT_OPTIONS,
    OTHER,
    get,
    jsoc_fetch,
    m45,
    poll_until_done,
    request,
)
from tests.emulators import server_config

pytestmark = pytest.mark.emulator(**EXPORT_OPTIONS)
MAGNETOGRAM = Catalog.load().get("hmi.M_45s").segment("magnetogram").size
DAY = 86400.0
ELEVEN = [f"user{i}@example.org" for i in range(11)]  # one more than an IP's pending exports
LIMIT_MB = 9 * MAGNETOGRAM // 2**20  # exactly 9 records (7 minutes) fit


@pytest.mark.emulator(staging_delay=30)
def test_second_pending_export_of_an_email_gets_status_7(emu: Emulator) -> None:
    client = drms.Client(server_config(emu.base_url), email=EMAIL)
    first = client.export(m45(3), method="url", protocol="fits")
    second = client.export(m45(6), method="url", protocol="fits")  # drms does not raise here
    assert first.status == 2 and second.status == 7
    assert second._d["error"] == (
        f"User {EMAIL} has 1 pending export requests ({first.id}); please wait until at least "
        "one request has completed before submitting a new one.")
    with pytest.raises(drms.DrmsExportError, match=r"\[status=7\]"):
        second.wait()
    assert request(emu, m45(6), OTHER)["status"] == 2  # the limit is per email
    stats = emu.stats()
    mine = stats["emails"][EMAIL]
    assert mine["status7"] == 1 and mine["peak_pending_exports"] == 1
    assert [v["kind"] for v in mine["violations"]] == ["second_pending_export"]
    assert stats["violations"] == 1
    emu.advance_clock(30)
    poll_until_done(emu, first.id)
    assert client.export(m45(6), method="url", protocol="fits").status == 2


@pytest.mark.emulator(pending_timeout=3600.0)
def test_pending_export_stops_counting_after_the_timeout(emu: Emulator) -> None:
    emu.set_faults(export_stuck_rate=1.0)
    assert request(emu, m45(3))["status"] == 2
    emu.advance_clock(3599)
    assert request(emu, m45(6))["status"] == 7
    emu.advance_clock(2)
    assert request(emu, m45(6))["status"] == 2


@pytest.mark.emulator(emails=ELEVEN, staging_delay=1000)
def test_more_than_ten_pending_exports_from_one_ip(emu: Emulator) -> None:
    emails = ELEVEN
    replies = [request(emu, m45(3 + i), email) for i, email in enumerate(emails)]
    assert [r["status"] for r in replies] == [2] * 10 + [7]
    assert replies[-1]["error"].startswith(f"There are too many requests from {emails[-1]}")
    client = emu.stats()["clients"]["127.0.0.1"]
    assert client["pending_exports"] == 10
    assert [v["kind"] for v in client["violations"]] == ["ip_pending_limit"]


@pytest.mark.emulator(max_export_mb=LIMIT_MB)
def test_size_limit_status_3(emu: Emulator) -> None:
    limit = LIMIT_MB
    assert limit < 10 * MAGNETOGRAM // 2**20 and limit // 10 < MAGNETOGRAM // 2**20
    assert request(emu, m45(7))["status"] == 2
    too_big = request(emu, m45(8), OTHER)
    assert too_big == {"requestid": "VOID", "method": "url", "protocol": "fits", "wait": 0,
                       "status": 3, "count": 10, "size": 10 * MAGNETOGRAM // 2**20,
                       "error": f"Request exceeds max byte limit of {limit}MB"}
    # compressed storage downloaded uncompressed: a tenth of the limit
    uncompressed = request(emu, m45(1), OTHER, protocol="fits,**NONE**")
    assert uncompressed["status"] == 3
    assert uncompressed["error"] == f"Request exceeds max byte limit of {limit // 10}MB"
    client = drms.Client(server_config(emu.base_url), email=OTHER)
    refused = client.export(m45(8), method="url_quick", protocol="as-is")
    with pytest.raises(drms.DrmsExportError, match=f"max byte limit of {limit}MB"):
        refused.wait()


def test_huge_request_is_sized_without_listing_it(emu: Emulator) -> None:
    began = time.monotonic()
    reply = request(emu, "aia.lev1_euv_12s[2014.01.01_00:00:00_TAI/30d]{image}")
    assert time.monotonic() - began < 5
    image = Catalog.load().get("aia.lev1_euv_12s").segment("image").size
    records = 30 * 7200 * 7  # 12 s slots x 7 wavelengths
    assert reply["status"] == 3 and reply["count"] == records
    assert reply["size"] == records * image // 2**20


# staging takes 2 s: the second request must find the first export still pending (at 0.05 s a
# loaded machine's round trip outlasted it)
@pytest.mark.emulator(clock_start="2025-01-01T10:00:00", staging_delay=2)
def test_duplicate_within_24_hours_returns_the_old_id(emu: Emulator) -> None:
    first = request(emu, m45(3))
    assert first["requestid"] == "JSOC_20250101_001"
    assert request(emu, m45(3))["status"] == 7  # still pending: the limit answers first
    assert request(emu, m45(3), OTHER)["requestid"] == first["requestid"]  # other email: dup
    done = poll_until_done(emu, first["requestid"])
    assert done["exptime"].startswith("2025.01.01_10:00:")
    again = request(emu, m45(3))
    assert again == {"status": 2, "requestid": first["requestid"], "method": "url",
                     "protocol": "fits", "wait": 0, "rcount": 4, "size": first["size"]}
    assert request(emu, m45(3), filenamefmt="{seriesname}.{T_REC:A}.{segment}")[
        "requestid"] == "JSOC_20250101_002"  # another filenamefmt is another request
    poll_until_done(emu, "JSOC_20250101_002")
    assert emu.stats()["exports"][first["requestid"]]["requested_times"] == 3
    emu.advance_clock(DAY)
    assert request(emu, m45(3))["requestid"] == "JSOC_20250102_001"  # window over, new day


def test_expiry_after_seven_days(emu: Emulator) -> None:
    first = request(emu, m45(3))
    done = poll_until_done(emu, first["requestid"])
    file_path = f"{done['dir']}/{done['data'][0]['filename']}"
    assert get(emu, file_path)
    emu.advance_clock(7 * DAY - 60)
    assert jsoc_fetch(emu, f"op=exp_status&requestid={first['requestid']}")["status"] == "0"
    emu.advance_clock(120)
    with pytest.raises(urllib.error.HTTPError) as gone:
        get(emu, file_path)  # deleted even before anyone asks for the status
    assert gone.value.code == 404
    assert emu.manifest()[file_path]["deleted"] is True  # still published, marked deleted
    expired = jsoc_fetch(emu, f"op=exp_status&requestid={first['requestid']}")
    assert expired == {"status": 5, "requestid": first["requestid"], "method": "url",
                       "protocol": "fits", "wait": 999999, "rcount": 0, "size": first["size"],
                       "error": "Request was completed but is now deleted, 7 day limit exceeded",
                       "contact": "jsoc_help@jsoc.stanford.edu"}


@pytest.mark.emulator(records=RecordsConfig(no_image_fraction=0.5))
def test_quality_filter_drops_records_without_an_image(emu: Emulator) -> None:
    client = drms.Client(server_config(emu.base_url), email=EMAIL)
    ds = m45(30)
    quality = client.query(ds, key="QUALITY", convert_numeric=False).QUALITY
    with_image = sum(1 for q in quality if int(q, 16) & 0x80000000 == 0)
    assert 0 < with_image < len(quality) == 40
    export = client.export(ds, method="url", protocol="fits")
    assert export._d["rcount"] == with_image
    assert export.wait(timeout=30, sleep=0.05) and len(export.data) == with_image
    mentioned = client.export("hmi.M_45s[2014.01.01_00:00:00_TAI/30m][? QUALITY < 0 ?]"
                              "{magnetogram}", method="url_quick", protocol="as-is")
    assert mentioned._d["rcount"] == 40 - with_image  # a query naming QUALITY is not filtered
