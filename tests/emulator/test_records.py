"""Computed records: counts from the slot rules, paging, identity, clock, gaps, HARPs."""

from __future__ import annotations

import math

import pytest

from jsocsim.catalog import Catalog
from jsocsim.query import QueryError, parse_recordset
from jsocsim.records import RecordEngine, RecordsConfig
from jsocsim.timeslots import format_time, parse_time

pytestmark = pytest.mark.unit

NOW = parse_time("2025.01.01_00:00:00_TAI")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture
def engine(catalog: Catalog) -> RecordEngine:
    return RecordEngine(catalog, RecordsConfig(), lambda: NOW)


def count(engine: RecordEngine, text: str) -> int:
    return engine.count(parse_recordset(text, engine.catalog))


def names(engine: RecordEngine, text: str, **kw) -> list[str]:
    return [r.name() for r in engine.iter_records(parse_recordset(text, engine.catalog), **kw)]


def test_protocol_9_2_counts_follow_from_the_rules(engine: RecordEngine) -> None:
    assert count(engine, "hmi.v_45s[2013.07.03_08:42_TAI/3m]") == math.floor(180 / 45)
    assert count(engine, "hmi.V_45s[2013.07.03_08:42_TAI/4m]") == math.floor(240 / 45)
    inclusive = count(engine, "hmi.M_45s[2013.07.03_08:42_TAI-2013.07.03_09:12_TAI]")
    half_open = count(engine, "hmi.M_45s[2013.07.03_08:42_TAI/30m]")
    assert (inclusive, half_open) == (1800 // 45 + 1, 1800 // 45)
    assert count(engine, "hmi.B_720s[2013.07.03_08:42_TAI/40m]") == math.floor(2400 / 720)


def test_boundaries_nearest_slot_and_short_durations(engine: RecordEngine) -> None:
    # slots are 45 s multiples from 1993.01.01_TAI: 08:42:00, 08:42:45, ...
    assert names(engine, "hmi.M_45s[2013.07.03_08:42:22_TAI]") == [
        "hmi.M_45s[2013.07.03_08:42:00_TAI][2]"
    ]
    # a tie (22.5 s from both) goes up
    assert names(engine, "hmi.M_45s[2013.07.03_08:42:22.5_TAI]") == [
        "hmi.M_45s[2013.07.03_08:42:45_TAI][2]"
    ]
    assert count(engine, "hmi.M_45s[2013.07.03_08:42_TAI/10s]") == 1  # shorter than a step
    assert count(engine, "hmi.M_45s[2013.07.03_08:42_TAI/100s]") == 100 // 45
    assert count(engine, "hmi.M_45s[2013.07.03_08:42_TAI-2013.07.03_08:42_TAI]") == 1


def test_cadence_sampling(engine: RecordEngine) -> None:
    got = names(engine, "hmi.M_45s[2013.07.03_08:00_TAI-2013.07.03_09:00_TAI@6m]")
    k = round(360 / 45)
    assert len(got) == 3600 // 45 // k + 1
    assert got[1] == "hmi.M_45s[2013.07.03_08:06:00_TAI][2]"
    assert count(engine, "hmi.M_45s[2013.07.03_08:00_TAI/1h@600.0s]") == math.ceil(
        80 / round(600 / 45)
    )


def test_utc_vs_tai_inputs_across_the_2016_leap_second(engine: RecordEngine) -> None:
    utc = names(engine, "hmi.M_45s[2016.12.31_23:59:00-2017.01.01_00:01:00]")
    tai = names(engine, "hmi.M_45s[2016.12.31_23:59:36_TAI-2017.01.01_00:01:37_TAI]")
    # 23:59:00 UTC = 23:59:36 TAI (TAI-UTC = 36): nearest 45 s slot is 23:59:15 (21 s away)
    assert utc == tai and utc[0] == "hmi.M_45s[2016.12.31_23:59:15_TAI][2]"
    # 00:01:00 UTC = 00:01:37 TAI (TAI-UTC = 37 after the leap second): nearest is 00:01:30
    assert utc[-1] == "hmi.M_45s[2017.01.01_00:01:30_TAI][2]"
    # AIA shows UTC with Z: in 2017 TAI-UTC = 37, so the 12 s TAI grid lands on :11, :23, ...
    aia = names(engine, "aia.lev1_euv_12s[2017-01-01T00:00:05Z/12s][171]")
    assert aia == ["aia.lev1_euv_12s[2017-01-01T00:00:11Z][171]"]
    # 00:00:00Z = 00:00:37 TAI; the nearest slot, 00:00:36 TAI, is the leap second itself
    leap = names(engine, "aia.lev1_euv_12s[2017-01-01T00:00:00Z][171]")
    assert leap == ["aia.lev1_euv_12s[2016-12-31T23:59:60Z][171]"]
    before = names(engine, "aia.lev1_euv_12s[2016-12-31T23:59:40Z/12s][171]")
    # 23:59:40Z = 00:00:16 TAI (TAI-UTC = 36 there): nearest slot 00:00:12 TAI = 23:59:36Z
    assert before == ["aia.lev1_euv_12s[2016-12-31T23:59:36Z][171]"]


def test_aia_rows_sorted_by_wavelength_within_t_rec(engine: RecordEngine) -> None:
    recs = list(
        engine.iter_records(
            parse_recordset("aia.lev1_euv_12s[2014-01-01T00:00:00Z/24s]", engine.catalog)
        )
    )
    assert len(recs) == 2 * 7
    assert [r.prime["WAVELNTH"] for r in recs[:7]] == [94, 131, 171, 193, 211, 304, 335]
    assert recs[0].name() == "aia.lev1_euv_12s[2014-01-01T00:00:01Z][94]"
    assert count(engine, "aia.lev1_euv_12s[2014-01-01T00:00:00Z/1h][171,193]") == 300 * 2
    assert count(engine, "aia.lev1_euv_12s[2014-01-01T00:00:00Z/1h][94-193]") == 300 * 4


def test_year_count_is_arithmetic_and_equals_sum_of_months(catalog: Catalog) -> None:
    # max_enumerate=1000: a count that walked records one by one would raise "too many records",
    # so a year of 12-s AIA data (millions of records) can only be counted from the slot rules.
    cfg = RecordsConfig(
        seed=3, gap_day_fraction=0.2, gap_min_seconds=60, gap_max_seconds=7200, max_enumerate=1000
    )
    engine = RecordEngine(catalog, cfg, lambda: NOW)
    for series in ("hmi.M_720s", "aia.lev1_euv_12s"):
        year = count(engine, f"{series}[2014.01.01_TAI/365d]")
        assert year > 1_000_000 if series.startswith("aia") else year > 40_000
        months = sum(
            count(engine, f"{series}[2014.{m:02d}.01_TAI-{2014 + m // 12}.{m % 12 + 1:02d}.01_TAI]")
            - count(engine, f"{series}[{2014 + m // 12}.{m % 12 + 1:02d}.01_TAI]")
            for m in range(1, 13)
        )
        assert year == months
        assert (
            0 < year < 365 * 86400 / engine.model(series).key.step * (7 if "aia" in series else 1)
        )


def test_gaps_counted_arithmetically_match_enumeration(catalog: Catalog) -> None:
    cfg = RecordsConfig(seed=5, gap_day_fraction=0.9, gap_min_seconds=600, gap_max_seconds=20000)
    engine = RecordEngine(catalog, cfg, lambda: NOW)
    text = "hmi.M_45s[2014.03.01_TAI/3d@90s]"
    listed = names(engine, text)
    assert count(engine, text) == len(listed) < 3 * 1920 // 2


def test_paging_start_limit_last(catalog: Catalog) -> None:
    engine = RecordEngine(catalog, RecordsConfig(seed=1, gap_day_fraction=0.5), lambda: NOW)
    text = "aia.lev1_euv_12s[2014-01-01T00:00:00Z/2d]"
    total = count(engine, text)
    subsets = parse_recordset(text, catalog)
    page = [r.name() for r in engine.iter_records(subsets, start=40_000, limit=5)]
    window = [r.name() for r in engine.iter_records(subsets, start=39_998, limit=9)]
    assert page == window[2:7]
    tail = [r.name() for r in engine.iter_records(subsets, limit=3, last=True)]
    assert tail == [r.name() for r in engine.iter_records(subsets, start=total - 3)]
    listed = list(engine.iter_records(subsets, start=total - 10_000, limit=10_000))
    rows = [
        [r.keyword(k) for k in ("T_REC", "T_OBS", "EXPTIME", "QUALITY", "CRLT_OBS", "DSUN_OBS")]
        for r in listed
    ]
    assert len(rows) == 10_000 and all(len(row) == 6 for row in rows)
    assert len(list(engine.iter_records(subsets, start=total))) == 0


def test_record_identity_and_sums_paths_invert(engine: RecordEngine) -> None:
    for text in (
        "hmi.M_45s[2014.01.01_TAI/2m]",
        "aia.lev1_euv_12s[2014-01-01T00:00:00Z]",
        "hmi.sharp_720s[][2014.11.30_TAI]",
        "iris.lev1[2014-01-01T00:00:00Z/20s]",
    ):
        for rec in engine.iter_records(parse_recordset(text, engine.catalog), limit=20):
            seg = rec.series.segments[0]
            path = rec.segment_path(seg.name)
            assert path.startswith("/SUM") and f"/D{rec.sunum}/S{rec.su_slot:05d}/" in path
            found = engine.locate_sums_path(path)
            assert found is not None and found[0] == rec and found[1] == seg.name
            same = names(engine, f"{rec.series.name}[:#{rec.recnum}]")
            assert same == [rec.name()]
    assert engine.locate_sums_path("/SUM1/D1/S00000/x.fits") is None
    assert engine.locate_sums_path("/etc/passwd") is None


def test_multi_file_directory_segment(engine: RecordEngine) -> None:
    rec = next(engine.iter_records(parse_recordset("hmi.v_sht_2drls[$]", engine.catalog)))
    files = rec.segment_files("log")
    assert len(files) > 1 and rec.segment_size("log") == sum(size for _, size in files)
    for name, _ in files:
        found = engine.locate_sums_path(f"{rec.recdir()}/{name}")
        assert found is not None and found[1:] == ("log", name)


def test_keywords_sentinels_and_pseudo_keys(engine: RecordEngine) -> None:
    rec = next(
        engine.iter_records(parse_recordset("hmi.V_45s[2013.07.03_08:42_TAI]", engine.catalog))
    )
    assert rec.name() == "hmi.V_45s[2013.07.03_08:42:00_TAI][2]"
    assert rec.keyword("T_REC") == "2013.07.03_08:42:00_TAI"
    assert rec.keyword("QUALITY") == "0x00000000"
    assert rec.keyword("NOSUCH") == "Invalid KeyLink"
    assert rec.segment_path("nosuch") == "InvalidSegName"
    assert rec.link("NOSUCH") == "Invalid_Link"
    assert isinstance(rec.keyword("*recnum*"), int) and isinstance(rec.keyword("*sunum*"), int)
    assert rec.keyword("*online*") == "Y" and rec.keyword("*size*") == str(rec.size())
    assert rec.keyword("*recdir*") == rec.recdir() and rec.keyword("*spec*") == rec.name()
    assert 2136 < int(rec.keyword("CAR_ROT")) < 2141 and abs(float(rec.keyword("CRLT_OBS"))) <= 7.25
    header = rec.keyword_values()
    assert header["T_REC"] == rec.keyword("T_REC") and header["QUALITY"] == 0
    assert header["CRLT_OBS"] == pytest.approx(float(rec.keyword("CRLT_OBS")))
    t_obs = parse_time(rec.keyword("T_OBS"))
    assert 0 < rec.time - t_obs < 10  # T_OBS offset from T_REC


def test_aia_exposure_varies_by_wavelength_and_slightly_per_record(engine: RecordEngine) -> None:
    recs = list(
        engine.iter_records(
            parse_recordset("aia.lev1_euv_12s[2014-01-01T00:00:00Z/2m]", engine.catalog)
        )
    )
    by_wave: dict[int, set[float]] = {}
    for r in recs:
        by_wave.setdefault(r.prime["WAVELNTH"], set()).add(float(r.keyword("EXPTIME")))
    assert len(by_wave[171]) > 1 and max(by_wave[171]) < min(by_wave[94])
    lev1 = recs[0].link("LEV1")
    assert lev1.startswith("aia.lev1[2014-01-01T00:00:01Z][")


def test_bad_quality_and_no_image(catalog: Catalog) -> None:
    cfg = RecordsConfig(seed=2, bad_quality_fraction=0.2, no_image_fraction=0.1)
    engine = RecordEngine(catalog, cfg, lambda: NOW)
    text = "hmi.M_45s[2014.01.01_TAI/1d]"
    recs = list(engine.iter_records(parse_recordset(text, catalog)))
    qualities = {r.keyword("QUALITY") for r in recs}
    assert qualities == {"0x00000000", "0x40000000", "0x80000000"}
    no_image = [r for r in recs if r.keyword("QUALITY") == "0x80000000"]
    assert all(r.keyword("CRLT_OBS") == "MISSING" for r in no_image)
    assert count(engine, f"{text}[? QUALITY < 0 ?]") == len(no_image)
    assert count(engine, f"{text}[? drms.image_exists(QUALITY) ?]") == len(recs) - len(no_image)
    assert count(engine, f"{text}[? QUALITY = '0x40000000' OR QUALITY<0 ?]") == sum(
        r.keyword("QUALITY") != "0x00000000" for r in recs
    )


def test_where_over_strings_and_times(engine: RecordEngine) -> None:
    base = "iris.lev1[2014-01-01T00:00:00Z/1m]"
    total = count(engine, base)
    fuv = count(engine, base + "[? INSTRUME='FUV' ?]")
    assert fuv * 4 == total and count(engine, base + "[! INSTRUME!='FUV' !]") == total - fuv
    half = count(engine, "hmi.M_45s[2014.01.01_TAI/1h][? T_REC < '2014.01.01_00:30:00_TAI' ?]")
    assert half == 1800 // 45


def test_harps_appear_and_disappear(engine: RecordEngine) -> None:
    def harps_at(day: str) -> set[int]:
        return {
            r.prime["HARPNUM"]
            for r in engine.iter_records(
                parse_recordset(f"hmi.sharp_720s[][{day}_00:00_TAI]", engine.catalog)
            )
        }

    a, b = harps_at("2014.06.01"), harps_at("2014.06.20")
    assert a and b and a != b and a & b
    assert max(b) > max(a) and min(b) > min(a)
    assert count(engine, "hmi.sharp_720s[4864][2014.11.30_00:00_TAI]") == 1
    k = sorted(a)[0]
    life = names(engine, f"hmi.sharp_720s[{k}]")
    assert 4 * 120 <= len(life) <= 28 * 120
    recs = list(
        engine.iter_records(parse_recordset("hmi.sharp_720s[][2014.06.01_TAI/1h]", engine.catalog))
    )
    assert [r.prime["HARPNUM"] for r in recs] == sorted(r.prime["HARPNUM"] for r in recs)
    assert len(recs) == count(engine, "hmi.sharp_720s[][2014.06.01_TAI/1h]")


def test_late_records_appear_when_the_clock_advances(catalog: Catalog) -> None:
    now = [parse_time("2020.01.01_12:00:00_TAI")]
    cfg = RecordsConfig(seed=4, publication_lag=600, late_fraction=0.3, late_delay=3600)
    engine = RecordEngine(catalog, cfg, lambda: now[0])
    text = "hmi.M_45s[2020.01.01_10:00_TAI-2020.01.01_12:00_TAI]"
    first = count(engine, text)
    last = names(engine, "hmi.M_45s[$]")[0]
    assert parse_time(last.split("[")[1].rstrip("]")) <= now[0] - 600
    now[0] += 3600 + 600
    assert count(engine, text) == 7200 // 45 + 1 > first
    assert count(engine, "hmi.M_45s[2021.01.01_TAI/1d]") == 0  # nothing after now


def test_series_bounds_and_offline(catalog: Catalog) -> None:
    engine = RecordEngine(catalog, RecordsConfig(offline_older_than_days=365), lambda: NOW)
    assert count(engine, "hmi.M_45s[2009.01.01_TAI/1d]") == 0
    assert count(engine, "mdi.fd_V[2012.01.01_TAI/1d]") == 0
    assert names(engine, "mdi.fd_V[$]") == ["mdi.fd_V[2011.04.12_23:59:00_TAI]"]
    old = next(engine.iter_records(parse_recordset("hmi.M_45s[2014.01.01_TAI]", catalog)))
    assert not old.online and old.segment_path("magnetogram") == "NoDataDirectory"
    assert old.keyword("*online*") == "N" and old.keyword("*retain*") == "N/A"
    iris = next(
        engine.iter_records(parse_recordset("iris.lev1[2014-01-01T00:00:00Z/20s]", catalog))
    )
    assert iris.nearline and not iris.online


def test_comma_joined_sets_concatenate_and_page(engine: RecordEngine) -> None:
    text = "hmi.M_45s[2014.01.01_TAI/3m],hmi.M_45s[2014.02.01_TAI/3m]"
    got = names(engine, text)
    assert len(got) == count(engine, text) == 8
    assert names(engine, text, start=3, limit=2) == got[3:5]


def test_too_many_records_to_check_is_a_clear_error(catalog: Catalog) -> None:
    engine = RecordEngine(catalog, RecordsConfig(max_enumerate=1000), lambda: NOW)
    with pytest.raises(QueryError, match="too many records"):
        count(engine, "hmi.M_45s[2014.01.01_TAI/1d][? QUALITY=0 ?]")
    assert format_time(NOW, "tai").startswith("2025.01.01")
