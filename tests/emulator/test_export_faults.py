"""Export-level faults: failing exports (4), stuck exports (1 with late waits), early expiry
(5), status 6 for the first polls, offline data (25, or a tape restore in the older mode)."""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path

import drms
import pytest

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


def status_of(emu: Emulator, requestid: str) -> dict:
    return jsoc_fetch(emu, f"op=exp_status&requestid={requestid}")


def wait_for_status(emu: Emulator, requestid: str, wanted: int, timeout: float = 20) -> dict:
    """Poll exp_status until it reports `wanted`, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        reply = status_of(emu, requestid)
        if int(reply["status"]) == wanted:
            return reply
        assert time.monotonic() < deadline, reply
        time.sleep(0.02)


def test_failing_export_ends_with_status_4(emu: Emulator) -> None:
    emu.set_faults(export_fail_rate=1.0)
    client = drms.Client(server_config(emu.base_url), email=EMAIL)
    export = client.export(m45(3), method="url", protocol="fits")
    assert export.status == 2
    with pytest.raises(drms.DrmsExportError, match=r"failed.*\[status=4\]"):
        export.wait(timeout=30, sleep=0.05)
    reply = status_of(emu, export.id)
    assert reply["wait"] == 999999 and reply["contact"] == "jsoc_help@jsoc.stanford.edu"
    assert emu.state.faults.fired["export_fail"] == 1
    assert request(emu, m45(6))["status"] == 2  # a failed export no longer blocks the email


@pytest.mark.emulator(staging_delay=10)
def test_stuck_export_stays_pending_with_late_waits(emu: Emulator) -> None:
    emu.set_faults(export_stuck_rate=1.0)
    first = request(emu, m45(3))
    assert first["wait"] == 10
    emu.advance_clock(110)
    reply = status_of(emu, first["requestid"])
    assert reply["status"] == 1 and -101 <= reply["wait"] <= -99  # the estimate passed long ago
    assert request(emu, m45(6))["status"] == 7  # still pending for the email


def test_export_expires_early(emu: Emulator) -> None:
    emu.set_faults(export_expire_after=60.0)
    first = request(emu, m45(3))
    done = poll_until_done(emu, first["requestid"])
    path = f"{done['dir']}/{done['data'][0]['filename']}"
    assert get(emu, path)
    emu.advance_clock(61)
    assert status_of(emu, first["requestid"])["status"] == 5
    with pytest.raises(urllib.error.HTTPError):
        get(emu, path)
    assert request(emu, m45(3))["requestid"] != first["requestid"]  # expired: no duplicate


def test_status_6_for_the_first_polls(emu: Emulator, tmp_path: Path) -> None:
    emu.set_faults(status6_polls=2)
    first = request(emu, m45(3))
    polls = [status_of(emu, first["requestid"]) for _ in range(2)]
    assert [p["status"] for p in polls] == [6, 6]
    assert "not recognized" in polls[0]["error"]
    assert int(poll_until_done(emu, first["requestid"])["status"]) == 0
    client = drms.Client(server_config(emu.base_url), email=OTHER)
    export = client.export(m45(6), method="url", protocol="fits")
    assert export.wait(timeout=30, sleep=0.05, retries_notfound=5)  # 6 counts as pending
    assert len(export.download(tmp_path)) == 8


def test_offline_data_status_25(emu: Emulator) -> None:
    emu.set_faults(offline_rate=1.0)
    client = drms.Client(server_config(emu.base_url), email=EMAIL)
    quick = client.export(m45(3), method="url_quick", protocol="as-is")
    assert quick.status == 25
    assert quick._d["error"].startswith("One or more data files are offline")
    assert quick._d["error"].endswith(quick.id)
    with pytest.raises(drms.DrmsExportError, match=r"\[status=25\]"):
        quick.wait()
    later = status_of(emu, quick.id)
    assert later["status"] == 4 and later["error"] == "Illegal status in export record"
    assert request(emu, m45(6))["status"] == 25  # fits exports need the data online too


@pytest.mark.emulator(offline_mode="tape", tape_delay=50)
def test_offline_data_in_tape_mode_is_restored_then_staged(emu: Emulator,
                                                           tmp_path: Path) -> None:
    emu.set_faults(offline_rate=1.0)
    client = drms.Client(server_config(emu.base_url), email=EMAIL)
    listed = client.query(m45(3), seg="magnetogram").magnetogram
    assert set(listed) == {"NoDataDirectory"}
    export = client.export(m45(3), method="url_quick", protocol="as-is")
    assert export.status == 2 and export.id.startswith("JSOC_")  # no quick answer
    assert export._d["wait"] == 51  # staging_delay + tape_delay, rounded up
    assert not export.wait(timeout=0.3, sleep=0.05)  # waiting for the tape
    emu.advance_clock(51)
    assert export.wait(timeout=30, sleep=0.05)
    assert export.method == "url_quick" and export.dir.startswith("/SUM")
    downloaded = export.download(tmp_path)
    assert len(downloaded) == 4 and all(downloaded.download)
