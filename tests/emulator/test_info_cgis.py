"""Info CGIs (show_series, showextseries, jsoc_info, checkAddress.sh) through drms and raw HTTP."""

from __future__ import annotations

import re
from urllib.parse import quote_plus

import aiohttp
import drms
import pytest

from jsocsim.catalog import Catalog
from jsocsim.timeslots import format_time, parse_time
from tests.emulator.helpers import DEFAULT_OPTIONS, EMAIL, PENDING_EMAIL
from tests.emulators import server_config

pytestmark = pytest.mark.emulator(**DEFAULT_OPTIONS)
CATALOG = Catalog.load()
V45_START = "2013.07.03_08:42:00_TAI"


def expected_names(regex: str) -> list[str]:
    """Catalog names matching `regex` case-insensitively, sorted case-sensitively."""
    return sorted(n for n in CATALOG.names() if re.search(regex, n, re.IGNORECASE))


# ---- drms: series listing ----------------------------------------------------------------------
def test_series_regex_via_showextseries_wrapper(drms_client: drms.Client) -> None:
    names = drms_client.series(r"hmi\.m_")
    assert names == expected_names(r"hmi\.m_")
    assert len(names) >= 2 and all(n.lower().startswith("hmi.m_") for n in names)


def test_series_full_via_wrapper_has_descriptions(drms_client: drms.Client) -> None:
    table = drms_client.series(r"aia\.lev1_euv", full=True)
    assert list(table["name"]) == expected_names(r"aia\.lev1_euv")
    assert list(table["note"]) == [CATALOG.get(n).note for n in table["name"]]


def test_series_via_plain_show_series(emu) -> None:
    client = drms.Client(server_config(emu.base_url, wrapper=False))
    assert client.series(r"HMI\.M_") == expected_names(r"hmi\.m_")
    table = client.series(r"hmi\.b_720s", full=True)
    assert list(table.iloc[0]["primekeys"]) == [k.name for k in CATALOG.get("hmi.B_720s").primekeys]


# ---- drms: info, keys, pkeys -------------------------------------------------------------------
def test_info_pkeys_keys(drms_client: drms.Client) -> None:
    series = CATALOG.get("hmi.M_45s")
    assert drms_client.pkeys("hmi.m_45s") == [k.name for k in series.primekeys]
    assert drms_client.keys("hmi.M_45s") == [k.name for k in series.keywords]
    info = drms_client.info("hmi.M_45s")
    assert info.name == "hmi.m_45s" and info.note == series.note
    assert list(info.segments.index) == [s.name for s in series.segments]


def test_unknown_series_is_a_query_error(drms_client: drms.Client) -> None:
    with pytest.raises(drms.DrmsQueryError, match="does not exist"):
        drms_client.info("hmi.no_such_series")
    with pytest.raises(drms.DrmsQueryError):
        drms_client.query("foo.bar[2014.01.01_TAI]", key="T_REC")


# ---- drms: queries -------------------------------------------------------------------------------
def test_query_keys_follow_slot_rules(drms_client: drms.Client) -> None:
    keys = drms_client.query(f"hmi.V_45s[{V45_START}/4m]", key="T_REC,QUALITY,*recnum*")
    assert len(keys) == 240 // 45  # a/d: floor(d/step) slots, end excluded
    start = parse_time(V45_START)
    assert list(keys["T_REC"]) == [format_time(start + 45 * i, "tai") for i in range(len(keys))]
    assert keys["QUALITY"].dtype.kind in "iuf"  # the hex strings were parsed by drms
    assert list(keys["*recnum*"]) == sorted(keys["*recnum*"])


def test_query_segments_links_rec_index(drms_client: drms.Client) -> None:
    series = CATALOG.get("hmi.B_720s")
    link = series.links[0].name
    seg = series.segments[0].name
    keys, segs = drms_client.query(f"hmi.B_720s[{V45_START}/40m]", key="T_REC", seg=seg,
                                   rec_index=True)
    assert len(segs) == 2400 // 720
    assert all(re.fullmatch(rf"/SUM\d+/D\d+/S\d{{5}}/{re.escape(series.segments[0].stored)}", p)
               for p in segs[seg])
    assert all(name.startswith("hmi.B_720s[") for name in keys.index)
    links = drms_client.query(f"hmi.B_720s[{V45_START}/40m]", link=link)
    assert len(links) == 3 and all(v != "Invalid_Link" for v in links[link])


def test_query_n_first_and_last(drms_client: drms.Client) -> None:
    ds = f"hmi.V_45s[{V45_START}/10m]"
    everything = list(drms_client.query(ds, key="T_REC")["T_REC"])
    assert list(drms_client.query(ds, key="T_REC", n=2)["T_REC"]) == everything[:2]
    assert list(drms_client.query(ds, key="T_REC", n=-3)["T_REC"]) == everything[-3:]


def test_query_empty_result(drms_client: drms.Client) -> None:
    keys = drms_client.query("hmi.V_45s[1999.01.01_00:00:00_TAI/1h]", key="T_REC")
    assert len(keys) == 0


def test_check_email(drms_client: drms.Client) -> None:
    assert drms_client.check_email(EMAIL) is True
    assert drms_client.check_email("notregistered@example.com") is False
    assert drms_client.check_email("not-valid") is False
    with pytest.raises(ValueError, match="invalid or not registered"):
        drms_client.email = "notregistered@example.com"


# ---- raw HTTP shapes -----------------------------------------------------------------------------
async def get_json(base: str, cgi: str, **params: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(
            f"{base}cgi-bin/ajax/{cgi}", params=params) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        return await resp.json()


async def test_empty_rs_list_has_only_count_runtime_status(emu) -> None:
    body = await get_json(emu.base_url, "jsoc_info", op="rs_list", key="T_REC",
                          ds="hmi.V_45s[1999.01.01_00:00:00_TAI/1h]")
    assert set(body) == {"count", "runtime", "status"} and body["count"] == 0


async def test_rs_list_sentinels_and_types(emu) -> None:
    body = await get_json(emu.base_url, "jsoc_info", op="rs_list", R="1",
                          ds=f"hmi.V_45s[{V45_START}/90s]", key="QUALITY,NOSUCHKEY,*sunum*",
                          seg="Dopplergram,nosuchseg", link="NOSUCHLINK")
    assert body["status"] == 0 and body["count"] == 2
    assert {"recinfo", "keywords", "segments", "links"} <= set(body)
    values = {k["name"]: k["values"] for k in body["keywords"]}
    assert all(re.fullmatch(r"0x[0-9a-fA-F]{8}", q) for q in values["QUALITY"])
    assert values["NOSUCHKEY"] == ["Invalid KeyLink"] * 2
    assert all(isinstance(v, int) for v in values["*sunum*"])
    bad_seg = body["segments"][1]
    assert bad_seg["values"] == ["InvalidSegName"] * 2 and bad_seg["dims"] == ["NA"] * 2
    assert body["links"][0]["values"] == ["Invalid_Link"] * 2
    assert body["recinfo"][0] == {"name": f"hmi.V_45s[{V45_START}][2]", "online": 1}


async def test_series_struct_field_set(emu) -> None:
    body = await get_json(emu.base_url, "jsoc_info", op="series_struct", ds="hmi.M_45s")
    assert set(body) == {"note", "retention", "stagingretention", "unitsize", "archive",
                         "tapegroup", "primekeys", "primekeysinfo", "dbindex", "keywords",
                         "segments", "links", "Interval", "runtime", "status"}
    assert body["primekeysinfo"][0] == {"name": "T_REC", "slotted": 1, "step": "45"}
    assert set(body["Interval"]) == {"FirstRecord", "FirstRecnum", "LastRecord", "LastRecnum",
                                     "MaxRecnum"}
    assert body["Interval"]["FirstRecnum"] <= body["Interval"]["LastRecnum"]


async def test_jsoc_info_errors(emu) -> None:
    unknown = await get_json(emu.base_url, "jsoc_info", op="rs_list", ds="x.y", key="A")
    assert unknown["status"] == 1 and "x.y" in unknown["error"]
    bad_op = await get_json(emu.base_url, "jsoc_info", op="nope", ds="hmi.M_45s")
    assert bad_op["status"] == 1 and "series_struct" in bad_op["error"]
    no_list = await get_json(emu.base_url, "jsoc_info", op="rs_list", ds="hmi.M_45s")
    assert no_list["status"] == 1 and "key, seg or link" in no_list["error"]


async def test_rs_summary_counts_and_caps(emu) -> None:
    ds = f"hmi.M_45s[{V45_START}-2013.07.03_09:12:00_TAI]{{magnetogram}}"
    body = await get_json(emu.base_url, "jsoc_info", op="rs_summary", ds=ds)
    assert body["count"] == 30 * 60 // 45 + 1  # a-b includes both end slots
    capped = await get_json(emu.base_url, "jsoc_info", op="rs_summary", ds=ds, n="-7")
    assert capped["count"] == 7


async def test_show_series_not_filter_and_bad_regex(emu) -> None:
    body = await get_json(emu.base_url, "show_series", filter="NOT hmi")
    assert [n["name"] for n in body["names"]] == [n for n in CATALOG.names()
                                                  if not re.search("hmi", n, re.I)]
    assert body["n"] == len(body["names"])
    bad = await get_json(emu.base_url, "show_series", filter="(")
    assert bad["status"] == 1 and "errmsg" in bad
    ext = await get_json(emu.base_url, "showextseries", filter="hmi")
    assert ext["seriesList"] == [] and "dbhost" in ext["errMsg"]


async def test_check_address_statuses_and_double_encoding(emu) -> None:
    base = emu.base_url
    registered = await get_json(base, "checkAddress.sh", address=quote_plus(EMAIL), checkonly="1")
    assert registered["status"] == 2
    plain = await get_json(base, "checkAddress.sh", address=EMAIL, checkonly="1")
    assert plain["status"] == 2
    pending = await get_json(base, "checkAddress.sh", address=quote_plus(PENDING_EMAIL),
                             checkonly="1")
    assert pending["status"] == 3
    unknown = await get_json(base, "checkAddress.sh", address="x@example.com", checkonly="1")
    assert unknown["status"] == 4
    for bad in ("not-valid", ""):
        assert (await get_json(base, "checkAddress.sh", address=bad, checkonly="1"))[
            "status"] == -2


async def test_cgis_accept_post(emu) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            emu.base_url + "cgi-bin/ajax/jsoc_info",
            data={"op": "rs_summary", "ds": f"hmi.V_45s[{V45_START}/3m]"}) as resp:
        assert (await resp.json())["count"] == 180 // 45
