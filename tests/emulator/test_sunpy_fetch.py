"""sunpy's Fido.fetch / JSOCClient.fetch against the emulator (export, wait, parfive download).

sunpy sleeps `sleep/2` seconds after requesting and drms polls every 5 s by default; the tests
pass sleep=0 and shorten drms's poll interval so they stay fast. What sunpy requests and
downloads is unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path

import drms
import pytest
from astropy.io import fits
from sunpy.net import Fido, jsoc
from sunpy.net import attrs as a

from jsocsim.server import Emulator
from tests.emulator.helpers import DEFAULT_OPTIONS, EMAIL

pytestmark = pytest.mark.emulator(**DEFAULT_OPTIONS)
TIME = a.Time("2014-01-01T00:00:00", "2014-01-01T00:02:00")
SERIES = a.jsoc.Series("hmi.M_45s")


@pytest.fixture
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """drms ExportRequest.wait polls every 0.05 s instead of 5 s."""
    monkeypatch.setattr(drms.ExportRequest, "wait",
                        functools.partialmethod(drms.ExportRequest.wait, sleep=0.05))


def check_against_manifest(emu: Emulator, files: list[str]) -> None:
    """Every downloaded file equals a file the emulator staged (size and sha256)."""
    by_hash = {entry["sha256"]: entry["size"] for entry in emu.manifest().values()}
    for name in files:
        data = Path(name).read_bytes()
        assert by_hash.get(hashlib.sha256(data).hexdigest()) == len(data), name


def test_fido_fetch_as_is(sunpy_jsoc: Emulator, tmp_path: Path) -> None:
    found = Fido.search(TIME, SERIES, a.jsoc.Segment("magnetogram"), a.jsoc.Notify(EMAIL),
                        a.jsoc.Protocol("as-is"))
    assert found.file_num == 3  # 00:00:00-00:02:00 inclusive: slots 0, 45, 90 s
    files = Fido.fetch(found, path=str(tmp_path / "{file}"), progress=False, max_conn=1,
                       sleep=0)
    assert not files.errors and len(files) == 3
    check_against_manifest(sunpy_jsoc, list(files))
    stats = sunpy_jsoc.stats()
    assert stats["clients"]["127.0.0.1"]["refused_connections"] == 0
    assert stats["exports"] == {}  # url_quick + as-is: no staged export


def test_jsoc_client_fetch_fits(sunpy_jsoc: Emulator, tmp_path: Path,
                                quick_polls: None) -> None:
    client = jsoc.JSOCClient()
    found = client.search(TIME, SERIES, a.jsoc.Segment("magnetogram"), a.jsoc.Notify(EMAIL))
    files = client.fetch(found, path=str(tmp_path), progress=False, sleep=0)
    assert not files.errors and len(files) == 3
    check_against_manifest(sunpy_jsoc, list(files))
    t_recs = set()
    for name in files:
        with fits.open(io.BytesIO(Path(name).read_bytes())) as hdul:
            t_recs.add(hdul[1].header["T_REC"])
    assert t_recs == set(found["T_REC"])
    (export,) = sunpy_jsoc.stats()["exports"].values()
    assert export["status"] == 0 and export["email"] == EMAIL
