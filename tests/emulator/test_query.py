"""The record-set grammar (docs/jsoc-protocol.md §6.1): every construct, and clear errors."""

from __future__ import annotations

import pytest

from jsocsim.catalog import Catalog
from jsocsim.query import QueryError, parse_recordset, single_series
from jsocsim.query_where import BoolOp, Compare, ImageExists, Literal, Ref
from jsocsim.timeslots import parse_duration, parse_time

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def one(text: str, catalog: Catalog):
    subsets = parse_recordset(text, catalog)
    assert len(subsets) == 1
    return subsets[0]


def test_series_only_and_case_insensitive_name(catalog: Catalog) -> None:
    q = one("HMI.m_45S", catalog)
    assert q.series.name == "hmi.M_45s" and q.key_items == {} and q.segments is None


def test_positional_groups_in_prime_key_order(catalog: Catalog) -> None:
    q = one("hmi.M_45s[2014.01.01_00:00:45_TAI][2]", catalog)
    assert q.key_items["T_REC"][0].kind == "value"
    assert q.key_items["T_REC"][0].start == parse_time("2014.01.01_00:00:45_TAI")
    assert q.key_items["CAMERA"][0].start == 2


def test_empty_group_then_time(catalog: Catalog) -> None:
    q = one("hmi.sharp_720s[][2014.11.30_00:00_TAI-2014.12.01_00:00_TAI]", catalog)
    assert "HARPNUM" not in q.key_items
    item = q.key_items["T_REC"][0]
    assert item.kind == "range" and item.end - item.start == 86400


def test_named_group_and_value_list(catalog: Catalog) -> None:
    q = one("aia.lev1_euv_12s[2014-01-01T00:00:00Z/1m][WAVELNTH=171,193]", catalog)
    assert [i.start for i in q.key_items["WAVELNTH"]] == [171, 193]
    q2 = one("aia.lev1_euv_12s[WAVELNTH=304][T_REC=2014-01-01T00:00:00Z]", catalog)
    assert q2.key_items["WAVELNTH"][0].start == 304 and "T_REC" in q2.key_items
    # like DRMS, a positional group continues after the last named key
    with pytest.raises(QueryError, match="too many prime-key groups"):
        one("aia.lev1_euv_12s[WAVELNTH=304][2014-01-01T00:00:00Z]", catalog)


def test_iso_range_with_dashes(catalog: Catalog) -> None:
    q = one("aia.lev1_euv_12s[2014-01-01T00:00:00Z-2014-01-01T01:00:00Z]", catalog)
    item = q.key_items["T_REC"][0]
    assert (item.kind, item.end - item.start) == ("range", 3600)


def test_duration_and_sampling(catalog: Catalog) -> None:
    q = one("hmi.M_45s[2014.01.01_TAI/1d@6m]", catalog)
    item = q.key_items["T_REC"][0]
    assert (item.kind, item.duration, item.sample) == ("duration", 86400.0, parse_duration("6m"))
    q2 = one("hmi.M_45s[2014.01.01_TAI-2014.01.02_TAI@600.0s]", catalog)
    assert q2.key_items["T_REC"][0].sample == 600.0


def test_first_last_and_numeric_range(catalog: Catalog) -> None:
    assert one("hmi.M_45s[$]", catalog).key_items["T_REC"][0].kind == "last"
    assert one("hmi.M_45s[^]", catalog).key_items["T_REC"][0].kind == "first"
    item = one("aia.lev1_euv_12s[][94-211]", catalog).key_items["WAVELNTH"][0]
    assert (item.kind, item.start, item.end) == ("range", 94, 211)


def test_recnum_ranges(catalog: Catalog) -> None:
    assert one("hmi.M_45s[:#123456]", catalog).recnum_ranges == [(123456, 123456)]
    assert one("hmi.M_45s[:#10-#20,#30]", catalog).recnum_ranges == [(10, 20), (30, 30)]


def test_where_clauses(catalog: Catalog) -> None:
    q = one("iris.lev1[2014-01-01T00:00:00Z/1m][? INSTRUME='FUV' ?]", catalog)
    assert q.where[0].latest_only and q.where[0].tree == Compare(
        Ref("INSTRUME"), "=", Literal("FUV")
    )
    q2 = one(
        "hmi.M_45s[2014.01.01_TAI/1h][! (QUALITY=0 OR QUALITY<>0x40000000) AND NOT CAMERA>=3 !]",
        catalog,
    )
    tree = q2.where[0].tree
    assert not q2.where[0].latest_only and isinstance(tree, BoolOp) and tree.op == "AND"
    assert tree.args[0].op == "OR" and tree.args[0].args[1].op == "!="
    assert tree.args[0].args[1].right == Literal(0x40000000)
    assert tree.args[1] == BoolOp("NOT", (Compare(Ref("CAMERA"), ">=", Literal(3)),))
    q3 = one("hmi.M_45s[2014.01.01_TAI][? drms.image_exists(QUALITY) ?]", catalog)
    assert q3.where[0].tree == ImageExists(Ref("QUALITY"))
    for op in ("=", "!=", "<>", "<", "<=", ">", ">="):
        assert one(f"hmi.M_45s[2014.01.01_TAI][? EXPTIME {op} 0.5 ?]", catalog).where


def test_segment_filter(catalog: Catalog) -> None:
    q = one("hmi.sharp_720s[4864][2014.11.30_00:00_TAI]{continuum, magnetogram}", catalog)
    assert q.segments == ["continuum", "magnetogram"]


def test_comma_joined_record_sets(catalog: Catalog) -> None:
    subsets = parse_recordset("hmi.M_45s[2014.01.01_TAI/1h],hmi.M_45s[2014.02.01_TAI/1h]", catalog)
    assert len(subsets) == 2 and single_series(subsets).name == "hmi.M_45s"
    mixed = parse_recordset("hmi.M_45s[2014.01.01_TAI],hmi.V_45s[2014.01.01_TAI]", catalog)
    with pytest.raises(QueryError, match="same series"):
        single_series(mixed)


def test_string_prime_key_quoted(catalog: Catalog) -> None:
    q = one("aia.response[][WAVE_STR='171_THIN','193_THIN']", catalog)
    assert [i.start for i in q.key_items["WAVE_STR"]] == ["171_THIN", "193_THIN"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("nosuch.series[2014.01.01]", "does not exist"),
        ("hmi.M_45s[2014.01.01_TAI][2][3]", "too many prime-key groups"),
        ("hmi.M_45s[yesterday]", "not a time value"),
        ("hmi.M_45s[2014.01.01_TAI", "missing ']'"),
        ("hmi.M_45s[FOO=3]", "not a prime key"),
        ("hmi.M_45s[2014.01.01_TAI/3weeks]", "bad duration"),
        ("hmi.M_45s[2014.01.01_TAI@6m]", "needs a range"),
        ("hmi.M_45s[2014.01.01_TAI]{nosuchseg}", "segment 'nosuchseg' does not exist"),
        ("hmi.M_45s[? NOSUCH=1 ?]", "unknown keyword 'NOSUCH'"),
        ("hmi.M_45s[? QUALITY = ?]", "condition ends too early"),
        ("hmi.M_45s[? QUALITY 0 ?]", "comparison operator"),
        ("hmi.M_45s[? QUALITY=0 ]", "condition must be written"),
        ("hmi.M_45s[:123]", "record-number range"),
        ("hmi.M_45s[][CAMERA=2][2]", "too many prime-key groups"),
        ("hmi.M_45s[T_REC=2014.01.01_TAI][T_REC=2014.01.02_TAI]", "given twice"),
        ("hmi.M_45s[2014.01.01_TAI]x", "unexpected 'x'"),
        ("hmi.M_45s,,hmi.M_45s", "empty record set"),
        ("", "empty"),
        ("[2014.01.01]", "expected a series name"),
        ("hmi.M_45s[2014.01.01_TAI," + "2" * 9000 + "]", "longer than 8192"),
    ],
)
def test_errors_are_jsoc_like_and_specific(catalog: Catalog, text: str, fragment: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_recordset(text, catalog)
    message = str(info.value)
    assert fragment in message
    assert "Traceback" not in message
