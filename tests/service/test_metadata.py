"""Series metadata helpers: the export file-name template, checked against the emulator."""

from __future__ import annotations

import asyncio
import re

import pytest

from jsocsim import run_emulator
from service.jsoc.client import JsocClient
from service.jsoc.metadata import PrimeKeyInfo, SeriesMeta

EMAIL = "meta@example.org"


@pytest.mark.unit
def test_filenamefmt_without_prime_keys_uses_recnum() -> None:
    meta = SeriesMeta(name="aia.Response", note="", primekeys=[], keywords=[], segments=[])
    assert meta.export_filenamefmt() == "aia.response.{recnum:%lld}.{segment}"


async def test_export_files_are_named_like_drms_names_them(tmp_path) -> None:
    async with run_emulator(tmp_path, emails=[EMAIL], staging_delay=0.05) as emu, \
            JsocClient(emu.base_url) as jsoc:
        meta = await jsoc.series_struct("hmi.sharp_720s")
        fmt = meta.export_filenamefmt()
        assert fmt == "hmi.sharp_720s.{HARPNUM}.{T_REC:A}.{segment}"
        assert meta.primekeys[1] == PrimeKeyInfo(
            name="T_REC", slotted=True, step=meta.primekeys[1].step,
            epoch=meta.primekeys[1].epoch, is_time=True)
        rs = "hmi.M_720s[2014.01.01_00:00:00_TAI/24m]{magnetogram}"
        m720 = await jsoc.series_struct("hmi.M_720s")
        reply = await jsoc.exp_request(rs, EMAIL, method="url", protocol="fits",
                                       filenamefmt=m720.export_filenamefmt())
        for _ in range(200):  # staging takes 0.05 s; bounded polling
            if reply.status == 0:
                break
            await asyncio.sleep(0.02)
            reply = await jsoc.exp_status(reply.request_id)
        names = sorted(filename for _record, filename in reply.data)
        assert len(names) == 2
        for name in names:
            assert re.fullmatch(r"hmi\.m_720s\.20140101_0[02]\d{4}_TAI\.\d\.magnetogram\.fits",
                                name), name
