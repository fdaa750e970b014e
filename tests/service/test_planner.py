"""Slot arithmetic, recordset building, and chunk planning/splitting.

The slot rules: docs/jsoc-protocol.md §6.3."""

from __future__ import annotations

import itertools
import re

import pytest

from service.db.repo import StoredChunk
from service.jobspec import SpecError
from service.planning.chunks import (
    END_MARGIN,
    ChunkPlan,
    ChunkSplitError,
    plan_chunks,
    sample_recordset,
    split_chunk,
)
from service.planning.recordsets import build_recordset
from service.planning.stored import new_chunk, stored_chunk_plan
from service.timeutil import (
    duration_range_slots,
    interval_slots,
    parse_duration,
    parse_time,
    slot_index,
    slot_time,
)
from service.validation import parse_job_spec
from tests.service.series_meta import (
    HMI_EPOCH,
    aia_meta,
    emulator_meta,
    hmi_meta,
    iris_meta,
    jsoc_info,
    make_meta,
    sharp_meta,
    t_rec,
)

HMI_E = parse_time(HMI_EPOCH)
AIA_E = 0.0  # 1977.01.01_00:00:00_TAI
TIME_GROUP = re.compile(r"\[([^\[\]/]+)/([0-9.]+[smhd])(?:@([0-9.]+)s)?\]")


def job(**fields: object):
    base = {"series": "hmi.M_720s", "start": "2014.01.01_00:00:00_TAI",
            "end": "2014.01.01_02:00:00_TAI"}
    return parse_job_spec({**base, **fields})


def selected(recordset: str, epoch: float, step: float, round_: float | None = None) -> range:
    """The slots JSOC would select for a recordset's ``start/duration[@c]`` group
    (docs/jsoc-protocol.md §6.3)."""
    match = TIME_GROUP.search(recordset)
    assert match, recordset
    cadence = float(match[3]) if match[3] else None
    return duration_range_slots(parse_time(match[1]), parse_duration(match[2]), epoch, step,
                                round_, cadence)


def whole_range(spec, epoch: float, step: float, round_: float | None = None) -> range:
    """The job's slots: JSOC's start-end with both ends included (what sunpy's a.Time asks)."""
    return interval_slots(spec.start_tai, spec.end_tai, epoch, step, round_, spec.cadence_seconds)


# --- slot rules -------------------------------------------------------------------------------

@pytest.mark.unit
def test_protocol_counts_follow_from_the_rules() -> None:
    a = parse_time("2013.07.03_08:42_TAI")
    assert len(duration_range_slots(a, 180, HMI_E, 45)) == 4  # floor(180/45)
    assert len(duration_range_slots(a, 240, HMI_E, 45)) == 5  # floor(240/45), not 6
    assert len(duration_range_slots(a, 2400, HMI_E, 720)) == 3  # floor(2400/720)
    assert len(interval_slots(a, a + 1800, HMI_E, 45)) == 41  # a-b includes both ends
    assert len(duration_range_slots(a, 1800, HMI_E, 45)) == 40
    assert len(duration_range_slots(a, 10, HMI_E, 45)) == 1  # shorter than a step: one slot


@pytest.mark.unit
def test_nearest_slot_ties_up_and_ts_slot_round() -> None:
    slot = slot_index(parse_time("2014.01.01_00:00:45_TAI"), HMI_E, 45)
    assert slot_index(slot_time(slot, HMI_E, 45) + 22.4, HMI_E, 45) == slot
    assert slot_index(slot_time(slot, HMI_E, 45) + 22.5, HMI_E, 45) == slot + 1
    assert slot_index(slot_time(slot, HMI_E, 45) - 22.5, HMI_E, 45) == slot
    assert slot_index(slot_time(slot, HMI_E, 45) + 44.9, HMI_E, 45, round_=0) == slot
    # A UTC date in 2010 (TAI−UTC = 34 s) is nearest to the 00:00:45_TAI slot (RecordSetHelp).
    index = slot_index(parse_time("2010.07.25"), HMI_E, 45)
    assert slot_time(index, HMI_E, 45) == parse_time("2010.07.25_00:00:45_TAI")


@pytest.mark.unit
def test_cadence_keeps_every_kth_slot_from_the_start() -> None:
    a = parse_time("2014.01.01_00:00:00_TAI")
    slots = duration_range_slots(a, 3600, AIA_E, 12, cadence=60)
    assert slots.step == 5 and len(slots) == 60 and slots[0] == slot_index(a, AIA_E, 12)
    assert duration_range_slots(a, 3600, AIA_E, 12, cadence=100).step == 8  # round(100/12)


# --- recordset building -----------------------------------------------------------------------

@pytest.mark.unit
def test_recordset_examples() -> None:
    # sunpy's form (jsoc.py _make_recordset): start-end in TAI, both ends included
    assert build_recordset(job(segments=["magnetogram"]), hmi_meta()) == \
        "hmi.M_720s[2014.01.01_00:00:00_TAI-2014.01.01_02:00:00_TAI]{magnetogram}"
    aia = job(series="aia.lev1_euv_12s", start="2014-01-01T00:00:00Z",
              end="2014-01-01T00:10:00Z", wavelengths=[171, 193], where=["EXPTIME > 1.5"],
              segments=["image"], cadence="60s")
    assert build_recordset(aia, aia_meta()) == \
        "aia.lev1_euv_12s[2014.01.01_00:00:35_TAI-2014.01.01_00:10:35_TAI@60s][171,193]" \
        "[? EXPTIME > '1.5' ?]{image}"


@pytest.mark.unit
def test_prime_key_groups_follow_declared_order() -> None:
    sharp = job(series="hmi.sharp_720s", prime_keys={"harpnum": [4864, 4865]})
    assert build_recordset(sharp, sharp_meta()).startswith(
        "hmi.sharp_720s[4864,4865][2014.01.01_00:00:00_TAI-2014.01.01_02:00:00_TAI]")
    assert build_recordset(job(series="hmi.sharp_720s"), sharp_meta()) == \
        "hmi.sharp_720s[][2014.01.01_00:00:00_TAI-2014.01.01_02:00:00_TAI]"  # skipped key: []
    assert build_recordset(job(prime_keys={"CAMERA": 1}), hmi_meta()) == \
        "hmi.M_720s[2014.01.01_00:00:00_TAI-2014.01.01_02:00:00_TAI][1]"
    assert build_recordset(job(where=["QUALITY = 0", "INSTRUME = 'HMI'"]), hmi_meta()) == \
        "hmi.M_720s[2014.01.01_00:00:00_TAI-2014.01.01_02:00:00_TAI]" \
        "[? QUALITY = '0' AND INSTRUME = 'HMI' ?]"
    raw = parse_job_spec({"recordset": "hmi.M_720s[$]"})
    assert build_recordset(raw, hmi_meta()) == "hmi.M_720s[$]"


# --- planning ---------------------------------------------------------------------------------

PLAN_CASES = [
    # (spec fields, meta factory, epoch, step, plan kwargs)
    ({}, hmi_meta, HMI_E, 720, {"max_records": 7}),
    ({"start": "2014.01.01_00:05:59_TAI", "end": "2014.01.02_03:17:00_TAI"}, hmi_meta, HMI_E,
     720, {"max_records": 10}),
    ({"start": "2014.01.01_00:06:00_TAI", "end": "2014.01.01_00:06:01_TAI"}, hmi_meta, HMI_E,
     720, {"max_records": 10}),
    ({"series": "aia.lev1_euv_12s", "start": "2014-01-01T00:00:07Z", "end": "2014-01-01T03:00:00Z",
      "wavelengths": [94, 171, 193], "cadence": "60s"}, aia_meta, AIA_E, 12, {"max_records": 100}),
    ({"series": "aia.lev1_euv_12s", "start": "2014-01-01T00:00:00Z", "end": "2014-01-01T01:01:01Z",
      "cadence": "100s"}, aia_meta, AIA_E, 12, {"max_records": 10 ** 6, "bytes_per_record": 10,
                                                "max_bytes": 95}),
    ({"start": "2014.01.01_00:00:00_TAI", "end": "2014.01.03_00:00:00_TAI", "cadence": "1h"},
     hmi_meta, HMI_E, 720, {"max_records": 5, "records_per_slot": 1.5}),
]


@pytest.mark.unit
@pytest.mark.parametrize(("fields", "meta_factory", "epoch", "step", "kwargs"), PLAN_CASES)
def test_chunks_cover_the_range_exactly_once(fields, meta_factory, epoch, step, kwargs) -> None:
    spec = job(**fields)
    chunks = list(plan_chunks(spec, meta_factory(), **kwargs))
    whole = whole_range(spec, epoch, step)
    per_chunk = [selected(c.recordset, epoch, step) for c in chunks]
    assert sum(len(s) for s in per_chunk) == len(whole)  # no slot twice ...
    assert set().union(*map(set, per_chunk)) == set(whole)  # ... and none skipped
    for chunk, slots in zip(chunks, per_chunk, strict=True):
        assert list(slots) == list(chunk.slots())
        assert slot_index(parse_time(chunk.start), epoch, step) == slots[0]
        assert slots[0] in whole  # each chunk starts on a sampled slot
        assert chunk.est_records <= kwargs["max_records"] or len(slots) == 1
        assert chunk.est_bytes <= kwargs.get("max_bytes", 2**60) or len(slots) == 1
    assert [c.seq for c in chunks] == list(range(len(chunks)))


@pytest.mark.unit
def test_chunk_sizes_follow_limits_and_multiplicity() -> None:
    aia = job(series="aia.lev1_euv_12s", wavelengths=[171, 193, 211])
    chunks = list(plan_chunks(aia, aia_meta(), max_records=300, bytes_per_record=1000,
                              max_bytes=10**9))
    assert chunks[0].slot_count == 100 and chunks[0].est_records == 300
    assert chunks[0].est_bytes == 300_000
    by_bytes = list(plan_chunks(aia, aia_meta(), max_records=10**6, bytes_per_record=1000,
                                max_bytes=30_000))
    assert by_bytes[0].slot_count == 10 and by_bytes[0].est_bytes == 30_000
    sampled = list(plan_chunks(aia, aia_meta(), max_records=300, records_per_slot=6))
    assert sampled[0].slot_count == 50
    empty_sample = list(plan_chunks(aia, aia_meta(), max_records=300, records_per_slot=0))
    assert empty_sample[0].slot_count == 100  # falls back to the 3 wavelengths asked for


@pytest.mark.unit
def test_planning_is_deterministic_and_resumes() -> None:
    spec = job(end="2014.01.05_00:00:00_TAI")
    first = list(plan_chunks(spec, hmi_meta(), max_records=13))
    assert first == list(plan_chunks(spec, hmi_meta(), max_records=13))
    assert list(plan_chunks(spec, hmi_meta(), max_records=13, start_after=5)) == first[6:]
    assert list(plan_chunks(spec, hmi_meta(), max_records=13, start_after=len(first))) == []


@pytest.mark.unit
def test_a_century_of_aia_is_planned_lazily() -> None:
    spec = job(series="aia.lev1_euv_12s", start="2000-01-01T00:00:00Z", end="2100-01-01T00:00:00Z")
    head = list(itertools.islice(plan_chunks(spec, aia_meta(), records_per_slot=7), 3))
    assert [c.seq for c in head] == [0, 1, 2]
    assert head[1].slots()[0] == head[0].slots()[-1] + 1
    total_slots = len(whole_range(spec, AIA_E, 12))  # ~2.6e8 slots; a list would not fit
    last_seq = -(-total_slots // head[0].slot_count) - 1
    tail = list(plan_chunks(spec, aia_meta(), records_per_slot=7, start_after=last_seq - 1))
    assert [c.seq for c in tail] == [last_seq]
    assert tail[0].slots()[-1] == whole_range(spec, AIA_E, 12)[-1]


@pytest.mark.unit
def test_ts_slot_and_unslotted_time_keys() -> None:
    raw = {"keywords": [{"name": "T_REC", "recscope": "ts_slot"},
                        {"name": "T_REC_round", "defval": "0"}]}
    meta = make_meta("hmi.M_720s", [t_rec(60)], hmi_meta().keywords, ["magnetogram"], raw)
    spec = job(start="2014.01.01_00:00:59_TAI")  # round 0: plain floor, slot 00:00:00
    chunks = list(plan_chunks(spec, meta, max_records=7))
    assert chunks[0].start == "2014.01.01_00:00:00_TAI"
    union = [s for c in chunks for s in selected(c.recordset, HMI_E, 60, round_=0)]
    assert union == list(whole_range(spec, HMI_E, 60, round_=0))
    iris = job(series="iris.lev1", start="2014.01.01_00:00:00.5_TAI")
    chunks = list(plan_chunks(iris, iris_meta(), max_records=1000, records_per_slot=1))
    assert chunks[0].start == "2014.01.01_00:00:00.5_TAI"
    # by value, end included: the last chunk stops a millisecond after end, not a step later
    assert sum(c.duration for c in chunks) == pytest.approx(iris.end_tai - iris.start_tai
                                                           + END_MARGIN, abs=1e-6)
    assert chunks[-1].recordset.endswith(f"/{chunks[-1].duration!r}s]")
    row = new_chunk(chunks[-1])  # as stored, then rebuilt to be split (JSOC status 3)
    rebuilt = stored_chunk_plan(iris, iris_meta(), StoredChunk(
        seq=0, part="", recordset=row.recordset, start_time=row.start_time,
        end_time=row.end_time, est_bytes=0))
    assert (rebuilt.first_slot, rebuilt.slot_count, rebuilt.until) == \
        (chunks[-1].first_slot, chunks[-1].slot_count, iris.end_tai)
    last_halves = split_chunk(rebuilt)  # a half keeps the end
    assert last_halves[0].duration + last_halves[1].duration == \
        pytest.approx(chunks[-1].duration, abs=1e-6)


@pytest.mark.unit
def test_recordset_and_follow_jobs() -> None:
    raw = parse_job_spec({"recordset": "hmi.M_720s[2014.01.01_TAI/1d]"})
    (chunk,) = plan_chunks(raw, hmi_meta())
    assert chunk.recordset == raw.recordset and chunk.start is None
    assert list(plan_chunks(raw, hmi_meta(), start_after=0)) == []
    with pytest.raises(ChunkSplitError, match="cannot be split"):
        split_chunk(chunk)
    follow = parse_job_spec({"series": "hmi.M_720s", "start": "2014.01.01_TAI", "follow": True})
    with pytest.raises(SpecError, match="until"):
        list(plan_chunks(follow, hmi_meta()))
    chunks = list(plan_chunks(follow, hmi_meta(), until="2014.01.01_01:00:00_TAI"))
    assert sum(c.slot_count for c in chunks) == 5  # floor(3600/720)


@pytest.mark.unit
def test_sample_recordset() -> None:
    text, slots = sample_recordset(job(), hmi_meta(), slots=4)
    assert slots == 4 and len(selected(text, HMI_E, 720)) == 4


# --- splitting --------------------------------------------------------------------------------

@pytest.mark.unit
def test_split_halves_on_slot_boundaries_down_to_single_slots() -> None:
    spec = job(series="aia.lev1_euv_12s", cadence="36s", wavelengths=[171])
    (chunk,) = plan_chunks(spec, aia_meta(), max_records=10**6)
    stored = ChunkPlan.model_validate_json(chunk.model_dump_json())  # survives the database
    pending, leaves = [stored], []
    while pending:
        current = pending.pop()
        if current.slot_count == 1:
            with pytest.raises(ChunkSplitError, match="one time slot"):
                split_chunk(current)
            leaves.append(current)
            continue
        a, b = split_chunk(current)
        assert (a.part, b.part) == (current.part + "0", current.part + "1")
        halves = [selected(h.recordset, AIA_E, 12) for h in (a, b)]
        assert list(halves[0]) + list(halves[1]) == list(current.slots())
        assert abs(len(halves[0]) - len(halves[1])) <= 1
        pending += [a, b]
    assert sorted(s for leaf in leaves for s in leaf.slots()) == list(chunk.slots())
    assert len({leaf.part for leaf in leaves}) == len(leaves) == chunk.slot_count


# --- cross-check against the emulator's rs_summary --------------------------------------------

EMULATOR_JOBS = [
    ({"start": "2014.01.01_00:05:59_TAI", "end": "2014.01.02_03:17:00_TAI",
      "segments": ["magnetogram"]}, {"max_records": 9}),
    ({"series": "hmi.M_45s", "start": "2013.07.03_08:42_TAI", "end": "2013.07.03_09:12_TAI"},
     {"max_records": 7}),
    ({"series": "aia.lev1_euv_12s", "start": "2014-01-01T00:00:07Z", "end": "2014-01-01T00:30:00Z",
      "wavelengths": [94, 171, 193], "cadence": "60s", "where": ["EXPTIME > 0.5"]},
     {"max_records": 20}),
    ({"series": "aia.lev1_euv_12s", "start": "2014-01-01T00:00:00Z", "end": "2014-01-01T00:20:00Z",
      "cadence": "100s"}, {"max_records": 30}),
    ({"series": "hmi.sharp_720s", "start": "2014.11.30_00:00_TAI", "end": "2014.11.30_06:00_TAI"},
     {"max_records": 200}),
    # by value (no slots), end included: T_OBS 00:09:53.52 lies after end, within a second
    ({"series": "iris.lev1", "start": "2014.01.01_00:00:00_TAI",
      "end": "2014.01.01_00:09:53_TAI"}, {"max_records": 120}),
]


async def rs_count(session: object, base: str, recordset: str) -> int:
    return int((await jsoc_info(session, base, op="rs_summary", ds=recordset))["count"])


async def test_chunk_counts_add_up_on_the_emulator(tmp_path) -> None:
    import aiohttp

    from jsocsim import run_emulator

    async with run_emulator(tmp_path) as emu, aiohttp.ClientSession() as session:
        base = emu.base_url
        for fields, limits in EMULATOR_JOBS:
            spec = job(**fields)
            meta = await emulator_meta(session, base, spec.series)
            whole = await rs_count(session, base, build_recordset(spec, meta))
            sample, slots = sample_recordset(spec, meta, slots=4)
            per_slot = await rs_count(session, base, sample) / slots
            chunks = list(plan_chunks(spec, meta, records_per_slot=per_slot, **limits))
            counts = [await rs_count(session, base, c.recordset) for c in chunks]
            assert whole > 0 and len(chunks) > 1, (fields, whole)
            assert sum(counts) == whole, (fields, counts)
            a, b = split_chunk(chunks[0])
            assert await rs_count(session, base, a.recordset) + \
                await rs_count(session, base, b.recordset) == counts[0]
