"""FITS structure and size verification, checked against files astropy writes and reads."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from service.download.verify import (
    BLOCK,
    VerificationError,
    check_fits,
    check_fits_bytes,
    check_size,
    sha256_file,
    verify_body,
    verify_file,
)

pytestmark = pytest.mark.unit


def write(path: Path, hdus: list[fits.hdu.base.ExtensionHDU]) -> Path:
    fits.HDUList(hdus).writeto(path)
    return path


def sample_files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1000, size=(200, 300)).astype(np.int32)
    table = fits.BinTableHDU.from_columns([
        fits.Column("T", "D", array=np.linspace(0, 1, 77)),
        fits.Column("V", "PJ()", array=[np.arange(i % 5) for i in range(77)]),  # heap: PCOUNT
    ])
    return [
        write(tmp_path / "empty_primary.fits", [fits.PrimaryHDU()]),
        write(tmp_path / "image.fits", [fits.PrimaryHDU(image.astype(np.float32))]),
        write(tmp_path / "multi.fits", [fits.PrimaryHDU(), fits.ImageHDU(image), table]),
        write(tmp_path / "rice.fits", [fits.PrimaryHDU(),
                                       fits.CompImageHDU(image, compression_type="RICE_1")]),
    ]


def test_hdu_layout_matches_astropy(tmp_path: Path) -> None:
    for path in sample_files(tmp_path):
        hdus = check_fits(path)
        with fits.open(path) as hdul:
            expected = [hdul.fileinfo(i) for i in range(len(hdul))]
        assert [(h.header_offset, h.data_offset) for h in hdus] == \
            [(e["hdrLoc"], e["datLoc"]) for e in expected], path.name
        assert [-(-h.data_bytes // BLOCK) * BLOCK for h in hdus] == \
            [e["datSpan"] for e in expected], path.name
        verify_file(path, expected_size=path.stat().st_size)
        assert check_fits_bytes(path.read_bytes(), path.name) == hdus  # a body in memory
        verify_body(path.read_bytes(), path.name, expected_size=path.stat().st_size)


def corrupt(src: Path, dest: Path, edit: Callable[[bytearray], bytearray]) -> Path:
    dest.write_bytes(edit(bytearray(src.read_bytes())))
    return dest


def test_corruptions_are_caught_with_a_reason(tmp_path: Path) -> None:
    good = sample_files(tmp_path)[2]  # primary + image + bintable
    raw = good.read_bytes()
    end_pos = raw.index(b"END" + b" " * 77)
    second_hdr = check_fits(good)[1].header_offset

    def replace_card(data: bytearray, key: bytes, card: bytes) -> bytearray:
        at = data.index(key.ljust(8))
        data[at:at + 80] = card.ljust(80)
        return data

    cases = {
        "not SIMPLE": (lambda d: replace_card(d, b"SIMPLE", b"SIMPLE  =                    F"),
                       "SIMPLE = T"),
        "no END": (lambda d: d[:end_pos] + b" " * 80 + d[end_pos + 80:], "no END card"),
        "lost block": (lambda d: d[:-BLOCK], "truncated"),
        "odd length": (lambda d: d[:-100], "multiple of 2880"),
        "trailing junk": (lambda d: d + b"\0" * BLOCK, "XTENSION"),
        "bad BITPIX": (lambda d: d[:second_hdr] + replace_card(
            d[second_hdr:], b"BITPIX", b"BITPIX  =                   12"), "BITPIX 12"),
        "NAXIS1 grown": (lambda d: d[:second_hdr] + replace_card(
            d[second_hdr:], b"NAXIS1", b"NAXIS1  =                 9000"), "truncated"),
        "not FITS": (lambda d: bytearray(b"<html>" + b" " * (BLOCK - 6)), "SIMPLE = T"),
    }
    for name, (edit, reason) in cases.items():
        bad = corrupt(good, tmp_path / f"bad_{name.replace(' ', '_')}.fits", edit)
        with pytest.raises(VerificationError, match=reason):
            check_fits(bad)
        with pytest.raises(VerificationError, match=reason):
            verify_body(bad.read_bytes(), bad.name)  # the same checks on a body in memory
        with pytest.raises((OSError, ValueError, VerificationError)):
            verify_file(bad, fits=True)


def test_missing_end_in_single_hdu_file(tmp_path: Path) -> None:
    header_only = bytearray(b"SIMPLE  =                    T".ljust(80) + b" " * (BLOCK - 80))
    path = tmp_path / "x.fits"
    path.write_bytes(bytes(header_only))
    with pytest.raises(VerificationError, match=r"cut off|END"):
        check_fits(path)


def test_size_and_name_rules(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"not fits at all")
    assert check_size(path, 15) == 15
    with pytest.raises(VerificationError, match="size is 15 bytes, expected 16"):
        check_size(path, 16)
    verify_file(path)  # not a FITS name: only the size is checked
    with pytest.raises(VerificationError, match="multiple of 2880"):
        verify_file(path, display_name="data.fits")
    verify_body(b"not fits at all", "data.bin", expected_size=15)  # the same for a held body
    with pytest.raises(VerificationError, match="size is 15 bytes, expected 16"):
        verify_body(b"not fits at all", "data.bin", expected_size=16)
    with pytest.raises(VerificationError, match="multiple of 2880"):
        verify_body(b"not fits at all", "data.fits")


def test_sha256_prefix(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000
    path = tmp_path / "d"
    path.write_bytes(data)
    assert sha256_file(path).hexdigest() == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, 4096, 12345).hexdigest() == hashlib.sha256(data[:12345]).hexdigest()
