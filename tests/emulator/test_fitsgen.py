"""File content: deterministic FITS/as-is bytes, headers, processing transforms, file names."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from jsocsim.catalog import Catalog
from jsocsim.cgi_fetch import ExportRequestError, render_filename
from jsocsim.config import make_config
from jsocsim.fitsgen import FileRecipe, fits_keyword_name, header_cards, image_shape
from jsocsim.processing import (
    ProcessingError,
    Transform,
    mod_record_name,
    mod_series_name,
    parse_process,
    plan_transform,
    rebin,
    spec_from_params,
)
from jsocsim.query import parse_recordset
from jsocsim.records import RecordEngine
from jsocsim.server import build_state

pytestmark = pytest.mark.unit

RECIPE = FileRecipe(seed=12345, filename="magnetogram.fits", segment_type="int",
                    nbytes=16 * 1024, compress=True)


def read_image(data: bytes) -> tuple[fits.Header, np.ndarray]:
    with fits.open(io.BytesIO(data)) as hdul:
        hdu = hdul[1] if len(hdul) > 1 else hdul[0]
        return hdu.header.copy(), np.array(hdu.data)


def test_same_recipe_same_bytes_and_changes_change_them() -> None:
    first = RECIPE.render()
    assert first == RECIPE.render()
    assert dataclasses.replace(RECIPE, seed=12346).render() != first
    assert dataclasses.replace(RECIPE, variant=1).render() != first
    assert dataclasses.replace(RECIPE, variant=1).render() == \
        dataclasses.replace(RECIPE, variant=1).render()


def test_compressed_and_plain_fits_hold_the_same_pixels() -> None:
    packed = RECIPE.render()
    plain = dataclasses.replace(RECIPE, compress=False).render()
    with fits.open(io.BytesIO(packed)) as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
        packed_data = np.array(hdul[1].data)
    with fits.open(io.BytesIO(plain)) as hdul:
        assert len(hdul) == 1
        plain_data = np.array(hdul[0].data)
    np.testing.assert_array_equal(packed_data, plain_data)  # Rice on integers is lossless
    side = image_shape(RECIPE.nbytes, 4)[0]
    assert plain_data.shape == (side, side) and plain_data.dtype.itemsize == 4


def test_size_option_scales_the_image() -> None:
    small = dataclasses.replace(RECIPE, compress=False).render()
    big = dataclasses.replace(RECIPE, compress=False, nbytes=16 * RECIPE.nbytes).render()
    assert 12 * len(small) < len(big) < 20 * len(small)


def test_header_carries_typed_keywords_and_skips_missing_and_structural() -> None:
    keywords = {"T_REC": "2014.01.01_00:00:45_TAI", "QUALITY": 0, "DATE__OBS": "2013-12-31T23:59",
                "CRPIX1": 2048.5, "DATAMEAN": None, "DATARMS": math.nan,
                "cparms_sg000": "compress Rice", "magnetogram_bzero": 0.0,
                "T_REC_epoch": "1993.01.01_00:00:00_TAI"}
    header, _ = read_image(dataclasses.replace(RECIPE, keywords=keywords).render())
    assert header["T_REC"] == keywords["T_REC"]
    assert header["QUALITY"] == 0 and isinstance(header["QUALITY"], int)
    assert header["DATE-OBS"] == keywords["DATE__OBS"]
    assert header["CRPIX1"] == 2048.5
    assert header["T_REC_EPOCH"] == keywords["T_REC_epoch"]  # long name -> HIERARCH
    for absent in ("DATAMEAN", "DATARMS", "CPARMS_SG000", "MAGNETOGRAM_BZERO"):
        assert absent not in header
    assert fits_keyword_name("T_REC_epoch") == "HIERARCH T_REC_EPOCH"


def test_as_is_files_have_no_record_keywords() -> None:
    header, _ = read_image(RECIPE.render())
    assert "T_REC" not in header and header["NAXIS"] == 2
    assert len(header_cards({})) == 0


def test_text_segments_are_not_fits() -> None:
    recipe = dataclasses.replace(RECIPE, filename="splittings.out", segment_type="string")
    data = recipe.render()
    assert data.startswith(b"# splittings.out\n") and data == recipe.render()
    assert abs(len(data) - RECIPE.nbytes) < 0.2 * RECIPE.nbytes


# ---- processing ------------------------------------------------------------------------------
def test_process_encodings_give_the_same_spec() -> None:
    steps = "rebin,method=boxcar,scale=0.25"
    drms_style = spec_from_params({"process=n": f"0|{steps}"})
    jsoc_style = spec_from_params({"process": f"n=0|{steps}"})
    assert drms_style == jsoc_style
    assert drms_style.n == 0 and drms_style.steps[0].name == "rebin"
    assert drms_style.text() == f"n=0|{steps}"
    assert spec_from_params({"process=n": "5"}).n == 5
    json_style = spec_from_params({"processing": '{"rebin": {"method": "boxcar", "scale": 0.25}}',
                                   "max_recs": "0"})
    assert json_style == drms_style


@pytest.mark.parametrize(("value", "fragment"), [
    ("n=0|foobar,x=1", "not allowed; accepted: im_patch"),
    ("n=0|Maproj,x=1", "not supported by this emulator"),
    ("n=abc", "must start with n=<integer"),
    ("n=0|rebin,scale", "expected key=value"),
])
def test_bad_process_values_say_what_is_accepted(value: str, fragment: str) -> None:
    with pytest.raises(ProcessingError, match=fragment):
        parse_process(value)


def test_rebin_shrinks_by_block_means() -> None:
    image = np.arange(64, dtype=np.float32).reshape(8, 8)
    small = rebin(image, 0.25)
    assert small.shape == (2, 2)
    assert small[0, 0] == pytest.approx(image[:4, :4].mean())


def test_im_patch_cuts_the_box_it_was_asked_for() -> None:
    spec = parse_process("n=0|im_patch,locunits=pixels,boxunits=pixels,x=1024,y=2048,"
                         "width=512,height=1024")
    transform = plan_transform(spec, {}, (4096, 4096))
    assert transform == Transform(y0=(2048 - 512) / 4096, x0=(1024 - 256) / 4096,
                                  height=1024 / 4096, width=512 / 4096)
    image = np.arange(256 * 256, dtype=np.int32).reshape(256, 256)
    patch = transform.apply(image)
    assert patch.shape == (64, 32)
    assert patch[0, 0] == image[96, 48]
    assert transform.size_ratio() == pytest.approx((512 * 1024) / 4096**2)
    with pytest.raises(ProcessingError, match="boxunits must be arcsec or pixels"):
        plan_transform(parse_process("n=0|im_patch,boxunits=parsec,width=1,height=1"), {})


def test_mod_names_follow_the_catalog() -> None:
    catalog = Catalog.load()
    assert mod_series_name("hmi.M_720s", catalog.names()) == "hmi.M_720s_mod"
    assert mod_series_name("hmi.Ic_45s", catalog.names()) == "hmi.Ic_45s_mod"
    assert mod_record_name("hmi.M_720s[2020.10.17_22:12:00_TAI][1]", "hmi.M_720s_mod") == \
        "hmi.M_720s_mod[2020.10.17_22:12:00_TAI][1]"


# ---- filename templates ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sharp_record():
    catalog = Catalog.load()
    engine = RecordEngine(catalog)
    subsets = parse_recordset("hmi.sharp_720s[4864][2014.11.30_00:00_TAI]", catalog)
    return next(engine.iter_records(subsets))


def test_filenamefmt_fields(sharp_record) -> None:
    drms_fmt = "hmi.sharp_720s.{HARPNUM}.{T_REC:A}.{segment}"
    assert render_filename(drms_fmt, "hmi.sharp_720s", sharp_record, "continuum.fits", 1) == \
        "hmi.sharp_720s.4864.20141130_000000_TAI.continuum.fits"
    server_default = "{seriesname}.{recnum:%d}.{segment}"
    assert render_filename(server_default, "hmi.sharp_720s", sharp_record, "x.fits", 1) == \
        f"hmi.sharp_720s.{sharp_record.recnum}.x.fits"
    assert render_filename("f{#:%04d}.{HARPNUM:%06d}", "s", sharp_record, "", 7) == "f0007.004864"
    with pytest.raises(ExportRequestError, match=r"not a keyword of hmi\.sharp_720s"):
        render_filename("{NOSUCHKEY}", "hmi.sharp_720s", sharp_record, "", 1)


# ---- the file store --------------------------------------------------------------------------
def test_store_generates_caches_and_changes_files(tmp_path: Path) -> None:
    state = build_state(make_config(data_dir=tmp_path))
    catalog, engine = state.catalog, state.engine
    record = next(engine.iter_records(parse_recordset("hmi.M_45s[2014.01.01_TAI]", catalog)))
    url = record.segment_path("magnetogram")
    path = state.store.locate_sync(url)
    data = path.read_bytes()
    assert state.store.manifest()[url] == {"size": len(data),
                                           "sha256": hashlib.sha256(data).hexdigest()}
    assert state.store.locate_sync(url + "x") is None
    assert state.store.locate_sync("/SUM1/D1/S00000/../../etc/passwd") is None
    state.store.change_file_sync(url)
    changed = path.read_bytes()
    assert changed != data and state.store.manifest()[url]["sha256"] == \
        hashlib.sha256(changed).hexdigest()
    again = build_state(make_config(data_dir=tmp_path))  # a restart reuses the cached file
    assert again.store.locate_sync(url).read_bytes() == changed
    assert again.store.manifest()[url]["size"] == len(changed)
    fresh = build_state(make_config(data_dir=tmp_path / "other"))
    assert fresh.store.locate_sync(url).read_bytes() == data  # deterministic content
