"""Validation of job specs against series metadata (hand-built SeriesMeta and the emulator's)."""

from __future__ import annotations

from typing import Any

import pytest

from service.jobspec import SpecError
from service.jsoc.metadata import SeriesMeta
from service.validation import (
    check_against_series,
    check_series_exists,
    parse_job_spec,
)
from tests.service.series_meta import (
    aia_meta,
    emulator_meta,
    hmi_meta,
    iris_meta,
    no_time_meta,
)

# Series facts from docs/jsoc-protocol.md §9.1 (prime keys, steps, segments); keyword lists are
# a subset.
SERIES_LIST = ["hmi.M_45s", "hmi.M_720s", "hmi.V_45s", "hmi.sharp_720s", "aia.lev1_euv_12s",
               "aia.lev1_uv_24s", "iris.lev1"]


def spec(**fields: Any):
    base = {"series": "hmi.M_720s", "start": "2014.01.01_TAI", "end": "2014.01.02_TAI"}
    return parse_job_spec({**base, **fields})


def problems(job: Any, meta: SeriesMeta) -> list[str]:
    with pytest.raises(SpecError) as info:
        check_against_series(job, meta)
    return info.value.problems


@pytest.mark.unit
def test_valid_specs_pass() -> None:
    check_against_series(spec(segments=["magnetogram"], where=["QUALITY = 0"],
                              prime_keys={"camera": 1},
                              path_template="{series}/{T_REC:%Y/%m}/{CAMERA}/{filename}"),
                         hmi_meta())
    check_against_series(spec(series="AIA.lev1_euv_12s", wavelengths=[171, 193],
                              segments=["image"], cadence="60s",
                              where=["exptime > 1.5"]), aia_meta())
    check_series_exists(spec().series_name, SERIES_LIST)
    check_against_series(spec(), hmi_meta())


@pytest.mark.unit
def test_unknown_series_suggests_close_matches() -> None:
    with pytest.raises(SpecError) as info:
        check_series_exists("hmi.M_72s", SERIES_LIST)
    (message,) = info.value.problems
    assert message.startswith("series 'hmi.M_72s' does not exist at JSOC; did you mean")
    assert "hmi.M_720s" in message
    assert check_series_exists("HMI.m_720S", SERIES_LIST) == "hmi.M_720s"
    with pytest.raises(SpecError, match="no similar series"):
        check_series_exists("zzz.qqq", SERIES_LIST)


@pytest.mark.unit
def test_unknown_segment_lists_segments_like_sunpy() -> None:
    assert problems(spec(segments=["magnetogram", "image"]), hmi_meta()) == [
        "Unexpected Segments were passed: ['image']. The series hmi.M_720s contains the "
        "following Segments ['magnetogram']"]


@pytest.mark.unit
def test_unknown_prime_key_lists_prime_keys() -> None:
    (message,) = problems(spec(prime_keys={"HARPNUM": 1}), hmi_meta())
    assert message == ("Unexpected PrimeKeys were passed: ['HARPNUM']. The series hmi.M_720s "
                       "supports the following PrimeKeys: ['T_REC', 'CAMERA']")
    (message,) = problems(spec(prime_keys={"T_REC": "2014.01.01_TAI"}), hmi_meta())
    assert "set by start and end" in message


@pytest.mark.unit
def test_unknown_where_keyword_suggests_and_lists() -> None:
    (message,) = problems(spec(where=["EXPTIM > 1"]), hmi_meta())
    assert message.startswith("Keyword: 'EXPTIM' is not supported by series: hmi.M_720s.")
    assert "Did you mean ['EXPTIME']" in message
    assert str(hmi_meta().keyword_names) in message


@pytest.mark.unit
def test_wavelengths_need_a_wavelength_prime_key() -> None:
    (message,) = problems(spec(wavelengths=[6173]), hmi_meta())
    assert "does not support wavelengths" in message and "['T_REC', 'CAMERA']" in message
    aia = spec(series="aia.lev1_euv_12s", wavelengths=[171], prime_keys={"WAVELNTH": 193})
    assert "not both" in problems(aia, aia_meta())[0]


@pytest.mark.unit
def test_time_key_rules() -> None:
    (message,) = problems(spec(series="hmi.v_sht_modes_x"), no_time_meta())
    assert "has no time prime key" in message and "use a recordset job" in message
    (message,) = problems(spec(series="iris.lev1", cadence="1m"), iris_meta())
    assert "cadence needs a slotted time key" in message
    check_against_series(spec(series="iris.lev1"), iris_meta())


@pytest.mark.unit
def test_path_template_fields_checked_against_series() -> None:
    (message,) = problems(spec(path_template="{series}/{HARPNUM}/{filename}"), hmi_meta())
    assert "path_template field {HARPNUM} is unknown for series hmi.M_720s" in message
    assert "series, record, segment, filename, recnum" in message
    (message,) = problems(spec(path_template="{CAMERA:%Y}/{filename}"), hmi_meta())
    assert "strftime format" in message and "not a time" in message
    check_against_series(spec(path_template="{T_OBS:%Y}/{QUALITY:08x}/{recnum}_{segment}"),
                         hmi_meta())


@pytest.mark.unit
def test_all_problems_reported_together() -> None:
    job = spec(segments=["nope"], where=["NOPE = 1"], prime_keys={"NOPE": 1}, wavelengths=[1],
               path_template="{NOPE}/{filename}")
    assert len(problems(job, hmi_meta())) == 5


@pytest.mark.unit
def test_recordset_job_checks_series_and_template() -> None:
    job = parse_job_spec({"recordset": "hmi.M_720s[2014.01.01_TAI/1d]{magnetogram}"})
    check_against_series(job, hmi_meta())
    with pytest.raises(SpecError, match="was given for a job on"):
        check_against_series(job, aia_meta())
    bad = parse_job_spec({"recordset": "hmi.M_720s[$]", "path_template": "{FOO}/{filename}"})
    assert "{FOO} is unknown" in problems(bad, hmi_meta())[0]


# --- against the emulator's series_struct / show_series ---------------------------------------
async def test_validation_with_emulator_metadata(tmp_path: Any) -> None:
    import json

    import aiohttp

    from jsocsim import run_emulator

    async with run_emulator(tmp_path) as emu, aiohttp.ClientSession() as session:
        async with session.get(emu.base_url + "cgi-bin/ajax/show_series") as response:
            names = [row["name"] for row in json.loads(await response.text())["names"]]
        meta = await emulator_meta(session, emu.base_url, "hmi.M_720s")
        check_series_exists("hmi.M_720s", names)
        check_against_series(spec(segments=["magnetogram"], where=["QUALITY = 0"]), meta)
        (message,) = problems(spec(segments=["image"]), meta)
        assert message == ("Unexpected Segments were passed: ['image']. The series hmi.M_720s "
                           f"contains the following Segments {meta.segment_names}")
        assert "Did you mean ['QUALITY']" in problems(spec(where=["QUALITI = 0"]), meta)[0]
        assert "does not support wavelengths" in problems(spec(wavelengths=[171]), meta)[0]
        aia = await emulator_meta(session, emu.base_url, "aia.lev1_euv_12s")
        check_against_series(spec(series="aia.lev1_euv_12s", wavelengths=[171],
                                  segments=["image"], cadence="1m",
                                  path_template="{T_REC:%Y}/{WAVELNTH}/{filename}"), aia)
        with pytest.raises(SpecError) as info:
            check_series_exists(spec(series="hmi.M_72s").series_name, names)
        assert "did you mean" in info.value.problems[0] and "hmi.M_720s" in info.value.problems[0]
