"""The catalog is data: required series, their keys, keywords, segments and links."""

from __future__ import annotations

import pytest

from jsocsim.catalog import Catalog
from jsocsim.keygen import GENERATORS
from jsocsim.timeslots import format_time

pytestmark = pytest.mark.unit

REQUIRED = [
    "hmi.M_45s",
    "hmi.V_45s",
    "hmi.Ic_45s",
    "hmi.M_720s",
    "hmi.Ic_720s",
    "hmi.B_720s",
    "hmi.sharp_720s",
    "hmi.sharp_cea_720s",
    "aia.lev1_euv_12s",
    "aia.lev1_uv_24s",
    "aia.lev1_vis_1h",
    "aia.lev1",
    "aia.response",
    "iris.lev1",
    "mdi.fd_V",
    "mdi.fd_M_lev182",
    "hmi.v_sht_2drls",
    "aia.lev1_euv_12s_mod",
    "hmi.M_720s_mod",
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def test_required_series_present_case_insensitively(catalog: Catalog) -> None:
    for name in REQUIRED:
        assert catalog.get(name.upper()).name == name
    with pytest.raises(KeyError):
        catalog.get("hmi.nosuch")
    assert catalog.names() == sorted(catalog.names())


@pytest.mark.parametrize(
    ("name", "keys", "step", "style"),
    [
        ("hmi.M_45s", ["T_REC", "CAMERA"], 45, "tai"),
        ("hmi.B_720s", ["T_REC", "CAMERA"], 720, "tai"),
        ("hmi.sharp_720s", ["HARPNUM", "T_REC"], 720, "tai"),
        ("aia.lev1_euv_12s", ["T_REC", "WAVELNTH"], 12, "iso_z"),
        ("aia.lev1_uv_24s", ["T_REC", "WAVELNTH"], 24, "iso_z"),
        ("aia.lev1_vis_1h", ["T_REC", "WAVELNTH"], 3600, "iso_z"),
        ("aia.lev1", ["T_REC", "FSN"], 12, "iso_z"),
        ("iris.lev1", ["T_OBS", "FSN"], 10, "iso_frac"),
        ("aia.response", ["T_START", "WAVE_STR"], 180 * 86400, "tai"),
    ],
)
def test_prime_keys_steps_and_display(
    catalog: Catalog, name: str, keys: list[str], step: float, style: str
) -> None:
    series = catalog.get(name)
    assert [k.name for k in series.primekeys] == keys
    assert series.time_key.step == step and series.t_rec_style == style


def test_epochs_and_first_records(catalog: Catalog) -> None:
    assert format_time(catalog.get("hmi.M_45s").time_key.epoch, "tai") == "1993.01.01_00:00:00_TAI"
    assert (
        format_time(catalog.get("aia.lev1_euv_12s").time_key.epoch, "tai")
        == "1977.01.01_00:00:00_TAI"
    )
    assert format_time(catalog.get("hmi.M_45s").first_record, "day") == "2010.04.30"
    assert format_time(catalog.get("aia.lev1_euv_12s").first_record, "date").startswith(
        "2010-05-13"
    )
    mdi = catalog.get("mdi.fd_V")
    assert format_time(mdi.first_record, "day").startswith("1996") and mdi.last_record is not None
    assert catalog.get("aia.lev1_euv_12s").primekey("WAVELNTH").values == (
        94,
        131,
        171,
        193,
        211,
        304,
        335,
    )


def test_every_keyword_derive_has_a_generator(catalog: Catalog) -> None:
    for series in catalog.all():
        for kw in series.keywords:
            assert kw.derive in GENERATORS, (series.name, kw.name, kw.derive)
            assert kw.type in (
                "string",
                "time",
                "short",
                "int",
                "longlong",
                "float",
                "double",
                "char",
            )


def test_standard_keywords_and_segment_keywords(catalog: Catalog) -> None:
    wanted = [
        "T_REC",
        "T_OBS",
        "DATE",
        "DATE__OBS",
        "TELESCOP",
        "INSTRUME",
        "WAVELNTH",
        "CAR_ROT",
        "CRLT_OBS",
        "CRLN_OBS",
        "DSUN_OBS",
        "RSUN_OBS",
        "EXPTIME",
        "QUALITY",
    ]
    for name in ("hmi.M_45s", "aia.lev1_euv_12s"):
        series = catalog.get(name)
        assert all(series.keyword(k) is not None for k in wanted)
    sharp = catalog.get("hmi.sharp_720s")
    assert len(sharp.segments) == 31
    for i, seg in enumerate(sharp.segments):
        assert sharp.keyword(f"cparms_sg{i:03d}") is not None
        assert sharp.keyword(f"{seg.name}_bzero") and sharp.keyword(f"{seg.name}_bscale")
    cea = catalog.get("hmi.sharp_cea_720s")
    assert {"Br", "Bp", "Bt"} <= {s.name for s in cea.segments}


def test_segments_files_sizes_and_directories(catalog: Catalog) -> None:
    assert catalog.get("aia.lev1_euv_12s").segment("image").stored == "image_lev1.fits"
    assert catalog.get("hmi.M_45s").segment("magnetogram").stored == "magnetogram.fits"
    euv = catalog.get("aia.lev1_euv_12s").segment("image").size
    assert 7_000_000 <= euv <= 14_000_000
    sht = catalog.get("hmi.v_sht_2drls")
    assert {s.stored for s in sht.segments} >= {"splittings.out", "rot.2d", "err.2d"}
    directory = [s for s in sht.segments if s.is_directory]
    assert directory and len(directory[0].files) > 1


def test_links_and_series_metadata(catalog: Catalog) -> None:
    mdata = catalog.get("hmi.B_720s").link("MDATA")
    assert mdata and mdata.target == "hmi.M_720s"
    assert {lk.name for lk in catalog.get("hmi.sharp_720s").links} == {"MHARP", "BHARP"}
    assert catalog.get("iris.lev1").nearline and not catalog.get("hmi.M_45s").nearline
    sunums = sorted(s.sunum_base for s in catalog.all())
    assert len(set(sunums)) == len(sunums)
    for series in catalog.all():
        assert series.note and series.unitsize >= 1 and series.retention > 0
