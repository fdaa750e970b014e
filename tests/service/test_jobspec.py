"""JobSpec model, error messages, path templates, and the time/duration parsing behind them."""

from __future__ import annotations

from datetime import datetime

import pytest
from astropy.time import Time
from astropy.utils import iers

from service.jobspec import JobSpec, SpecError, render_path
from service.timeutil import (
    DRMS_EPOCH,
    TimeFormatError,
    format_duration,
    format_tai,
    parse_duration,
    parse_time,
    tai_minus_utc,
)
from service.validation import parse_job_spec

pytestmark = pytest.mark.unit

iers.conf.auto_download = False  # astropy is the oracle here; it must never reach the network

BASE = {"series": "hmi.M_720s", "start": "2014.01.01_00:00:00_TAI",
        "end": "2014.01.02_00:00:00_TAI"}


def problems_of(**changes: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_job_spec({**BASE, **changes})
    return info.value.problems


def astropy_tai_seconds(utc_iso: str) -> float:
    """TAI seconds since 1977-01-01 TAI, computed by astropy from a UTC time."""
    epoch = Time("1977-01-01T00:00:00", scale="tai")
    return float((Time(utc_iso, scale="utc").tai - epoch).sec)


# --- times and durations ----------------------------------------------------------------------

@pytest.mark.parametrize("utc", [
    "1993-01-01T00:00:00", "2012-06-30T23:59:59", "2012-07-01T00:00:00", "2014-01-01T00:00:01",
    "2016-12-31T23:59:59", "2017-01-01T00:00:00", "2024-05-05T12:34:56.250"])
def test_utc_strings_match_astropy(utc: str) -> None:
    assert parse_time(utc + "Z") == pytest.approx(astropy_tai_seconds(utc), abs=1e-6)
    assert parse_time(utc) == parse_time(utc + "Z")  # no zone means UTC


def test_leap_second_and_offsets_follow_the_table() -> None:
    for utc in ("1980-01-01T00:00:00", "2012-06-30T23:59:59", "2012-07-01T00:00:00",
                "2016-12-31T23:59:59", "2017-01-01T00:00:00"):
        calendar = datetime.fromisoformat(utc)
        expected = (Time(utc, scale="utc").tai.datetime - calendar).total_seconds()
        assert tai_minus_utc(calendar) == pytest.approx(expected, abs=1e-6)
    leap = parse_time("2016-12-31T23:59:60Z")
    assert leap == parse_time("2016-12-31T23:59:59Z") + 1 == parse_time("2017-01-01T00:00:00Z") - 1


def test_jsoc_and_iso_forms() -> None:
    tai = parse_time("2014.01.01_00:00:45_TAI")
    assert tai == (datetime(2014, 1, 1, 0, 0, 45) - DRMS_EPOCH).total_seconds()
    assert format_tai(tai) == "2014.01.01_00:00:45_TAI"
    assert parse_time("2014.01.01_TAI") == parse_time("2014-01-01T00:00:00 TAI")
    assert parse_time("2013.07.03_08:42_TAI") == parse_time("2013.07.03_08:42:00_TAI")
    assert parse_time("2010.07.25_13") == parse_time("2010-07-25T13:00:00Z")
    assert parse_time("2014-01-01T01:00:00+01:00") == parse_time("2014-01-01T00:00:00Z")
    # UTC and TAI readings of one calendar time differ by TAI−UTC (35 s in 2014).
    assert parse_time("2014.01.01_00:00:00") - parse_time("2014.01.01_00:00:00_TAI") == 35
    for text in ("2014.01.01_00:00:00.25_TAI", "2015.06.30_23:59:59_TAI"):
        assert format_tai(parse_time(text)) == text


@pytest.mark.parametrize("bad", ["yesterday", "2014.13.01", "2014-01-01T25:00", "2014/13/01",
                                 "2014.01.01_00:00:60_TAI", ""])
def test_bad_times_say_what_is_accepted(bad: str) -> None:
    with pytest.raises(TimeFormatError) as info:
        parse_time(bad)
    assert repr(bad) in str(info.value) or "second" in str(info.value)


SUNPY_FORMS = ["2014/01/01 00:00", "2014/01/01 00:00:30.5", "2014/01/01T12:30", "2014/01/01",
               "2014-Jan-01 06:07:08", "01-Jan-2014 06:07:08", "20140101T060708",
               "20140101_0607", "201401010607", "2014:001:06:07:08", "2014-01-01 06:07",
               "2014.01.01_06:07:08_TAI", "2016.05.04_21:08:12.5_TAI", "2016-12-31T23:59:59"]


@pytest.mark.parametrize("text", SUNPY_FORMS)
def test_times_in_sunpy_forms_agree_with_sunpy(text: str) -> None:
    """What sunpy's a.Time accepts (sunpy.time.parse_time) means the same instant here."""
    from sunpy.time import parse_time as sunpy_parse_time

    expected = sunpy_parse_time(text).tai
    epoch = Time("1977-01-01T00:00:00", scale="tai")
    assert parse_time(text) == pytest.approx((expected - epoch).to_value("s"), abs=1e-5)


def test_durations_with_units() -> None:
    for text, seconds in (("10 min", 600), ("1h", 3600), ("45s", 45), ("1 hour", 3600),
                          ("2 days", 172800), ("90 sec", 90), ("1.5 hr", 5400),
                          ("5 Min", 300), ("1 week", 604800), ("3600000 ms", 3600)):
        assert parse_duration(text) == seconds, text
    for bad in ("10 metre", "10 parsecs", "min"):
        with pytest.raises(TimeFormatError, match="a duration must be"):
            parse_duration(bad)
    assert parse_job_spec({**BASE, "cadence": "10 min"}).cadence_seconds == 600


def test_durations() -> None:
    assert parse_duration("10m") == 600
    assert parse_duration("1.5h") == 5400
    assert parse_duration("1d") == 86400
    assert parse_duration(45) == 45
    for seconds in (7200, 600, 45, 86400, 90, 1.5):
        assert parse_duration(format_duration(seconds)) == seconds
    for bad in ("10", "ten minutes", "-5m", "0s", True):
        with pytest.raises(TimeFormatError, match="a duration must be"):
            parse_duration(bad)


# --- the model --------------------------------------------------------------------------------

def test_minimal_spec_and_defaults() -> None:
    spec = parse_job_spec(BASE)
    assert (spec.protocol, spec.method, spec.effective_method) == ("fits", "auto", "url")
    assert spec.path_template == "{series}/{filename}" and spec.priority == 0
    assert spec.end_tai - spec.start_tai == 86400
    assert spec.notify_or("me@example.org") == "me@example.org"
    assert parse_job_spec({**BASE, "notify": "a@b.org"}).notify_or("me@example.org") == "a@b.org"


@pytest.mark.parametrize(("protocol", "method", "effective"), [
    ("as-is", "auto", "url_quick"), ("fits", "auto", "url"), ("fits", "url-tar", "url-tar"),
    ("as-is", "url", "url"), ("fits", "url_quick", "url"), ("as-is", "url_quick", "url_quick"),
])
def test_method_resolution(protocol: str, method: str, effective: str) -> None:
    spec = parse_job_spec({**BASE, "protocol": protocol, "method": method})
    assert spec.effective_method == effective


def test_choice_errors_name_the_choices() -> None:
    assert problems_of(protocol="fitz") == ["protocol must be one of fits, as-is; got 'fitz'"]
    assert problems_of(method="ftp") == [
        "method must be one of auto, url, url_quick, url-tar; got 'ftp'"]


def test_unknown_field_lists_accepted_fields() -> None:
    (message,) = problems_of(serie="x")
    assert message.startswith("unknown field 'serie'; accepted fields:")
    assert all(name in message for name in JobSpec.model_fields)


def test_shape_rules() -> None:
    assert "give either series" in parse_errors({"start": BASE["start"]})[0]
    assert "recordset replaces" in problems_of(recordset="hmi.M_720s[2014.01.01_TAI/1d]")[0]
    assert "end is required unless follow" in parse_errors({**BASE, "end": None})[0]
    assert "must not be after end" in problems_of(start=BASE["end"], end=BASE["start"])[0]
    assert "both ends are included" in problems_of(start=BASE["end"], end=BASE["start"])[0]
    same = parse_job_spec({**BASE, "end": BASE["start"]})  # start == end: the nearest slot
    assert same.start_tai == same.end_tai
    assert "follow jobs have no end" in problems_of(follow=True)[0]
    assert "only apply to follow jobs" in problems_of(lag="1h")[0]


def parse_errors(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_job_spec({k: v for k, v in data.items() if v is not None})
    return info.value.problems


def test_follow_fields() -> None:
    spec = parse_job_spec({"series": "hmi.M_720s", "start": BASE["start"], "follow": True,
                           "lag": "2h", "check_interval": "10m"})
    assert spec.end is None and spec.lag_seconds == 7200 and spec.check_interval_seconds == 600
    assert "lag: a duration must be" in parse_errors({**BASE, "end": None, "follow": True,
                                                      "lag": "soon"})[0]


def test_time_and_cadence_errors() -> None:
    (message,) = problems_of(start="next tuesday")
    assert message.startswith("start: cannot parse time 'next tuesday'. Accepted: JSOC style")
    (message,) = problems_of(cadence="10")
    assert message.startswith("cadence: a duration must be a number with a time unit")
    assert parse_job_spec({**BASE, "cadence": "10m"}).cadence_seconds == 600


def test_where_forms_and_sql() -> None:
    spec = parse_job_spec({**BASE, "where": [
        "QUALITY = 0", "EXPTIME > 1.5", "INSTRUME = 'FUV'",
        {"keyword": "T_OBS", "op": "<=", "value": "2014.01.01_TAI"},
        {"keyword": "NOTE", "op": "!=", "value": "it's"}]})
    assert [w.to_sql() for w in spec.where] == [
        "QUALITY = '0'", "EXPTIME > '1.5'", "INSTRUME = 'FUV'",
        "T_OBS <= '2014.01.01_TAI'", "NOTE != 'it''s'"]
    assert "OP one of =, !=, <, <=, >, >=" in problems_of(where=["QUALITY ~ 0"])[0]
    assert "op must be one of" in problems_of(where=[{"keyword": "Q", "op": "==", "value": 1}])[0]
    assert "keyword name" in problems_of(where=[{"keyword": "1x", "op": "=", "value": 1}])[0]


def test_prime_keys_wavelengths_segments() -> None:
    spec = parse_job_spec({**BASE, "prime_keys": {"CAMERA": 1, "HARPNUM": [1, 2]},
                           "wavelengths": 171, "segments": "magnetogram"})
    assert spec.wavelengths == [171] and spec.segments == ["magnetogram"]
    assert "empty list" in problems_of(prime_keys={"CAMERA": []})[0]
    assert "without [ ]" in problems_of(prime_keys={"CAMERA": "1]"})[0]
    assert "empty list" in problems_of(segments=[])[0]
    assert "segment names" in problems_of(segments=["a b"])[0]
    assert "notify must be an email" in problems_of(notify="nobody")[0]
    assert "priority" in problems_of(priority="high")[0]


def test_json_input() -> None:
    import json

    assert parse_job_spec(json.dumps(BASE)).series == "hmi.M_720s"
    assert "not valid JSON" in parse_errors_raw("{")[0]
    assert "must be a JSON object" in parse_errors_raw("[1]")[0]


def parse_errors_raw(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_job_spec(text)
    return info.value.problems


# --- path templates ---------------------------------------------------------------------------

@pytest.mark.parametrize(("template", "fragment"), [
    ("/abs/{filename}", "relative path"),
    ("~/{filename}", "relative path"),
    ("{series}/../{filename}", "'..' component"),
    ("{series}//{filename}", "empty, '.' or '..'"),
    ("./{filename}", "empty, '.' or '..'"),
    ("{T_REC:%Y/../%d}/{filename}", "'..' component"),
    ("{series.attr}/{filename}", "plain name"),
    ("{series!r}/{filename}", "no !conversion"),
    ("{series/{filename}", "not a valid template"),
    ("{}/{filename}", "plain name"),
    ("  ", "path_template is empty"),
])
def test_bad_templates_rejected(template: str, fragment: str) -> None:
    (message,) = problems_of(path_template=template)
    assert fragment in message


def test_render_path_fields_and_times() -> None:
    template = "{series}/{T_REC:%Y/%m/%d}/{WAVELNTH:04d}/{filename}"
    parse_job_spec({**BASE, "path_template": template})
    values = {"series": "aia.lev1_euv_12s", "T_REC": "2014-01-01T23:59:59Z", "WAVELNTH": "94",
              "filename": "image_lev1.fits"}
    assert render_path(template, values) == "aia.lev1_euv_12s/2014/01/01/0094/image_lev1.fits"
    # A TAI time string is formatted on the TAI calendar, as JSOC displays it.
    tai_values = {"series": "s", "t_rec": "2014.01.02_00:00:10_TAI", "filename": "f"}
    assert render_path("{T_REC:%Y%m%d_%H%M%S}/{filename}", tai_values) == "20140102_000010/f"
    assert render_path("{series}/{record}", {"series": "a", "record": "x/y"}) == "a/x_y"
    with pytest.raises(ValueError, match="has no value"):
        render_path("{series}/{HARPNUM}", {"series": "a"})
    with pytest.raises(ValueError, match=r"'\.\.' component"):
        render_path("{series}/{filename}", {"series": "a", "filename": ".."})
    with pytest.raises(ValueError, match="empty"):
        render_path("{series}/{filename}", {"series": "", "filename": "f"})
