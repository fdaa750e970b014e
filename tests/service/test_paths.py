"""Destination names from servers or requests never escape the download root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.download.paths import (
    UnsafePathError,
    check_filename,
    part_path,
    safe_join,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("name", "reason"), [
    ("", "empty"),
    ("/etc/passwd", "absolute path"),
    ("C:/Windows/x.fits", "absolute path"),
    ("../x.fits", "'..' component"),
    ("a/../../x.fits", "'..' component"),
    ("a/./x.fits", "'.' component"),
    ("a//x.fits", "empty path component"),
    ("a/", "empty path component"),
    ("a\\..\\x.fits", "backslash"),
    ("x\x00.fits", "NUL"),
    ("x\n.fits", "control character"),
    ("x" * 256, "longer than 255 bytes"),
    ("x.fits.part", "reserved"),
])
def test_unsafe_names_are_rejected_with_a_reason(tmp_path: Path, name: str, reason: str) -> None:
    with pytest.raises(UnsafePathError, match=reason) as info:
        safe_join(tmp_path, name)
    assert "accepted:" in str(info.value)


def test_plain_names_stay_inside(tmp_path: Path) -> None:
    dest = safe_join(tmp_path, "hmi.m_45s/2014/01/hmi.m_45s.20140101_000000_TAI.2.fits")
    assert dest == Path(os.path.realpath(tmp_path)) / "hmi.m_45s/2014/01" / dest.name
    assert safe_join(tmp_path, "a b:c@d.fits").name == "a b:c@d.fits"
    assert part_path(dest).name == dest.name + ".part"


def test_symlink_out_of_root_is_rejected(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "inner").symlink_to(root / "real", target_is_directory=True)
    (root / "real").mkdir()
    with pytest.raises(UnsafePathError, match="outside the download root"):
        safe_join(root, "escape/x.fits")
    assert safe_join(root, "inner/x.fits").parent == Path(os.path.realpath(root)) / "inner"
    (root / "link.fits").symlink_to(outside / "target.fits")
    with pytest.raises(UnsafePathError, match=r"outside the download root|existing symlink"):
        safe_join(root, "link.fits")
    (root / "real" / "f").write_text("x")
    (root / "samelink.fits").symlink_to(root / "real" / "f")
    with pytest.raises(UnsafePathError, match="existing symlink"):
        safe_join(root, "samelink.fits")


def test_symlink_deeper_below_the_root_is_followed_only_inside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "b" / "out").symlink_to(outside)
    (root / "a" / "b" / "in").symlink_to(root / "a", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside the download root"):
        safe_join(root, "a/b/out/c/x.fits")
    assert safe_join(root, "a/b/in/b/x.fits") == Path(os.path.realpath(root)) / "a/b/in/b/x.fits"
    (outside / "x.fits").write_text("x")
    (root / "a" / "b" / "x.fits").symlink_to(outside / "x.fits")
    with pytest.raises(UnsafePathError, match=r"outside the download root|existing symlink"):
        safe_join(root, "a/b/x.fits")
    (root / "a" / "b" / "d").mkdir()
    with pytest.raises(UnsafePathError, match="existing directory"):
        safe_join(root, "a/b/in/b/d")


def test_root_may_itself_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "root").symlink_to(tmp_path / "data")
    assert safe_join(tmp_path / "root", "x.fits") == Path(os.path.realpath(tmp_path)) / "data" / \
        "x.fits"


def test_a_resolved_root_gives_the_same_checks(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "root").symlink_to(tmp_path / "data")
    real = os.path.realpath(tmp_path / "root")
    joined = safe_join(real, "a/x.fits", root_is_real=True)
    assert joined == safe_join(tmp_path / "root", "a/x.fits")
    (tmp_path / "data" / "out").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="outside the download root"):
        safe_join(real, "out/x.fits", root_is_real=True)


def test_directory_destination_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(UnsafePathError, match="existing directory"):
        safe_join(tmp_path, "d")


def test_server_file_names() -> None:
    assert check_filename("a.fits") == "a.fits"
    for bad in ("..", "", "/"):
        with pytest.raises(UnsafePathError):
            check_filename(bad)
    with pytest.raises(UnsafePathError, match="may not contain '/'"):
        check_filename("a/b.fits")
