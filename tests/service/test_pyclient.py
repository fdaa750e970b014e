"""The Python client's inputs (specs from sunpy results, record sets, dicts) and the CLI's
client-side help and version. Whole jobs through the daemon: tests/e2e/test_files_client_e2e."""

from __future__ import annotations

import astropy.units as u
import pytest
from astropy.table import Table
from astropy.time import Time
from sunpy.net.fido_factory import UnifiedResponse
from sunpy.net.jsoc.jsoc import JSOCResponse

from jsoc_bulk import SpecError, to_spec
from jsoc_bulk.results import FileEntry, results_from
from service import cli
from service.jobspec import JobSpec

pytestmark = pytest.mark.unit


def jsoc_response(*queries: dict) -> JSOCResponse:
    response = JSOCResponse(Table({"T_REC": ["2014.01.01_00:00:00_TAI"]}))
    response.query_args = list(queries)
    return response


QUERY = {"series": "aia.lev1_euv_12s", "start_time": Time("2014-01-01T00:00:00"),
         "end_time": Time("2014-01-01T01:00:00"), "wavelength": 171 * u.AA,
         "segment": ["image"], "sample": 60.0, "notify": "me@example.org",
         "keyword": {"EXPTIME": {"operator": ">", "value": 1.5},
                     "QUALITY": {"operator": "==", "value": 0}}}


def test_a_sunpy_search_becomes_the_spec_of_its_query() -> None:
    spec = to_spec(jsoc_response(QUERY), path_template="{series}/{filename}")
    assert spec == {
        "series": "aia.lev1_euv_12s", "start": "2014.01.01_00:00:35_TAI",  # as sunpy sends it
        "end": "2014.01.01_01:00:35_TAI", "wavelengths": [171], "segments": ["image"],
        "cadence": "60s", "notify": "me@example.org", "path_template": "{series}/{filename}",
        "where": [{"keyword": "EXPTIME", "op": ">", "value": 1.5},
                  {"keyword": "QUALITY", "op": "=", "value": 0}]}
    JobSpec.model_validate(spec)  # a valid job spec
    assert to_spec(UnifiedResponse(jsoc_response(QUERY))) == to_spec(jsoc_response(QUERY))


def test_record_sets_dicts_and_what_cannot_be_submitted() -> None:
    assert to_spec("hmi.M_720s[2014.01.01_TAI/1h] ", priority=2) == {
        "recordset": "hmi.M_720s[2014.01.01_TAI/1h]", "priority": 2}
    assert to_spec({"series": "hmi.M_720s"}, end="x") == {"series": "hmi.M_720s", "end": "x"}
    with pytest.raises(SpecError, match="submit them one at a time"):
        to_spec(jsoc_response(QUERY, QUERY))
    with pytest.raises(SpecError, match="cannot submit a int: give a job spec dict"):
        to_spec(42)
    with pytest.raises(SpecError, match="no time range"):
        to_spec(jsoc_response({"series": "hmi.M_720s"}))


def test_results_list_done_paths_and_failures_without_raising() -> None:
    def entry(i: int, state: str, error: str | None = None) -> FileEntry:
        return FileEntry(i, f"/d/f{i}.fits", f"r[{i}]", "image", state, 10, None, error, "u")

    results = results_from([entry(1, "done"), entry(2, "failed", "HTTP 404")],
                           {"id": "J", "state": "completed_with_errors"})
    assert list(results) == ["/d/f1.fits"]
    assert [(e.record, e.error) for e in results.errors] == [("r[2]", "HTTP 404")]


def test_client_commands_list_only_the_connection_options(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["jobs", "--help"])
    jobs_help = capsys.readouterr().out
    assert "--api-url" in jobs_help and "--token" in jobs_help
    assert "--jsoc-url" not in jobs_help and "--max-chunk-records" not in jobs_help
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    assert "--max-chunk-records" in capsys.readouterr().out
    with pytest.raises(SystemExit) as version:
        cli.main(["--version"])
    assert version.value.code == 0 and capsys.readouterr().out.startswith("jsoc-bulk ")
