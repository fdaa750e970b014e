"""Multi-file series and directory segments through the real drms client.

hmi.v_sht_2drls: drms's own online test (test_export_asis_basic) exports
`hmi.v_sht_2drls[2024.09.19_00:00:00_TAI]{split,rot,err}` as-is and gets nine URLs, three per
segment, from the three records (NACOEFF 6, 18, 36) of that T_START. Directory segments
(hmi.rdVflows_fd15_frame, 2drls `log`) follow JSOC's export code: one index row per segment
naming the directory, `url-tar` holding every file inside, and no plain download of a directory.
"""

from __future__ import annotations

import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import drms
import pytest

from jsocsim.server import Emulator
from tests.emulator.helpers import EMAIL
from tests.emulators import server_config

pytestmark = pytest.mark.emulator(emails=[EMAIL], staging_delay=0.05)

SHT = "hmi.v_sht_2drls[2024.09.19_00:00:00_TAI]{split,rot,err}"
SHT_NAMES = ("splittings.out", "rot.2d", "err.2d")
FLOWS = "hmi.rdvflows_fd15_frame[2150][360]{Ux,Uy}"


@pytest.fixture
def client(emu: Emulator) -> drms.Client:
    return drms.Client(server_config(emu.base_url), email=EMAIL)


@pytest.mark.parametrize("method", ["url_quick", "url"])
def test_v_sht_2drls_as_is_gives_nine_urls_and_downloads(client: drms.Client, method: str,
                                                         tmp_path: Path) -> None:
    r = client.export(SHT, method=method, protocol="as-is", requester=False)
    assert r.wait(timeout=60, sleep=0.1) and r.has_succeeded() and r.protocol == "as-is"
    urls = r.urls
    assert len(urls) == 9  # three records x three segments
    for record in urls.record:
        assert record.lower().startswith("hmi.v_sht_2drls[2024.09.19_00:00:00_tai]")
        assert record.endswith(("{split}", "{rot}", "{err}"))
    assert all(f.endswith(SHT_NAMES) for f in urls.filename)
    assert all(u.endswith(SHT_NAMES) for u in urls.url)
    assert sorted({rec.split("]")[4] for rec in urls.record}) == ["[18", "[36", "[6"]
    out = tmp_path / method
    out.mkdir()
    got = r.download(out)
    assert got.download.notna().all()
    files = sorted(out.iterdir())
    assert len(files) == 9 and all(p.stat().st_size > 0 for p in files)


def test_v_sht_2drls_series_struct_and_records(client: drms.Client) -> None:
    info = client.info("hmi.v_sht_2drls")
    assert info.primekeys == ["T_START", "LMIN", "LMAX", "NDT", "NACOEFF", "RADEXP", "LATEXP"]
    assert {"split", "rot", "err", "log"} <= set(info.segments.index)
    keys, segs = client.query("hmi.v_sht_2drls[2024.09.19_00:00:00_TAI]",
                              key="NACOEFF,LMAX", seg="split,log")
    assert list(keys.NACOEFF) == [6, 18, 36] and set(keys.LMAX) == {200}
    assert all(p.endswith("/splittings.out") for p in segs.split)
    # a directory segment is listed as the segment directory itself
    assert all(p.endswith("/log") for p in segs.log)


def test_rdvflows_directory_segment_paths(emu: Emulator, client: drms.Client) -> None:
    info = client.info("hmi.rdVflows_fd15_frame")
    assert info.primekeys == ["CarrRot", "CMLon"]
    keys, segs = client.query(FLOWS, key="CarrRot,CMLon", seg="Ux,Uy")
    assert list(keys.CarrRot) == [2150] and list(keys.CMLon) == [360]
    assert segs.Ux[0].endswith("/Ux") and segs.Uy[0].endswith("/Uy")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(emu.base_url + segs.Ux[0].lstrip("/"), timeout=30)
    assert refused.value.code == 403
    assert b"url-tar" in refused.value.read()
    assert client.query("hmi.rdVflows_fd15_frame[2150]", key="CMLon").shape[0] == 24


@pytest.mark.parametrize("method", ["url_quick", "url"])
def test_directory_segment_as_is_lists_the_directory(client: drms.Client, method: str,
                                                     tmp_path: Path) -> None:
    r = client.export(FLOWS, method=method, protocol="as-is", requester=False)
    assert r.wait(timeout=60, sleep=0.1) and r.has_succeeded()
    urls = r.urls
    assert list(urls.record) == ["hmi.rdVflows_fd15_frame[2150][360]{Ux}",
                                 "hmi.rdVflows_fd15_frame[2150][360]{Uy}"]
    assert urls.url[0].endswith("Ux") and urls.url[1].endswith("Uy")
    got = r.download(tmp_path)  # drms cannot fetch a directory (its docstring says so)
    assert got.download.isna().all()


def test_directory_segment_url_tar_holds_every_file(client: drms.Client,
                                                    tmp_path: Path) -> None:
    r = client.export(FLOWS, method="url-tar", protocol="as-is", requester=False)
    assert r.wait(timeout=60, sleep=0.1) and r.has_succeeded()
    got = r.download(tmp_path)
    (tar_path,) = got.download
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        members = {m.name: m.size for m in tar.getmembers()}
    rows = list(r.data.filename)
    assert len(rows) == 2 and {"index.json", "index.txt"} <= set(names)
    for row in rows:
        inside = [n for n in names if n.startswith(row + "/")]
        assert len(inside) > 1 and all(members[n] > 0 for n in inside)
    sht = client.export("hmi.v_sht_2drls[2024.09.19_00:00:00_TAI][0][200][138240][36]{log}",
                        method="url-tar", protocol="as-is", requester=False)
    assert sht.wait(timeout=60, sleep=0.1) and sht.has_succeeded()
    data = urllib.request.urlopen(sht.urls.url[0], timeout=30).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        logs = [n for n in tar.getnames() if "/" in n]
    assert sorted(n.rsplit("/", 1)[1] for n in logs) == ["kernels.log", "rls.log", "run.out"]


def test_directory_segment_fits_export_copies_the_tree(client: drms.Client) -> None:
    """jsoc_export_as_fits copies a generic segment (a directory as a tree): one row per
    segment, record without {segment}; the directory itself is not downloadable."""
    r = client.export(FLOWS, method="url", protocol="fits", requester=False)
    assert r.wait(timeout=60, sleep=0.1) and r.has_succeeded()
    assert list(r.data.record) == ["hmi.rdVflows_fd15_frame[2150][360]"] * 2
    assert [f.rsplit(".", 1)[-1] for f in r.data.filename] == ["Ux", "Uy"]
