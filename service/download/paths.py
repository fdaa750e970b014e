"""Safe destination paths: a name from a server or a request never escapes the download root.

Accepted: a relative path of plain components (letters, digits, punctuation other than `/` and
`\\`), no `.` or `..` components, no empty components, no NUL or control characters, each
component at most 255 bytes, and no symlink on the way that leads outside the root.

Files are written without following symlinks: a symlink at a file's name or at its ``.part``
name is an error naming it (``SymlinkError``), checked with lstat and opened with
O_NOFOLLOW, so nothing is ever written outside the root through one. (A directory symlink
that stays inside the root is followed; one leading outside is refused by ``safe_join``.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import io
import os
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from service.download.errors import DownloadError

MAX_COMPONENT_BYTES = 255
PART_SUFFIX = ".part"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(DownloadError, ValueError):
    """A destination name that could escape the download root or is not a usable file name."""


def _reject(name: str, why: str) -> UnsafePathError:
    return UnsafePathError(
        f"unsafe destination path {name!r}: {why}; accepted: a relative path inside the "
        f"download root made of plain names (no '..', '.', empty parts, absolute paths, "
        f"backslashes, NUL or control characters)"
    )


def check_relative_name(name: str) -> list[str]:
    """Validate a relative name and return its components; raise UnsafePathError otherwise."""
    if not isinstance(name, str) or not name:
        raise _reject(str(name), "it is empty")
    if "\x00" in name:
        raise _reject(name, "it contains a NUL byte")
    if _CONTROL.search(name):
        raise _reject(name, "it contains a control character")
    if "\\" in name:
        raise _reject(name, "it contains a backslash")
    if name.startswith("/") or _DRIVE.match(name):
        raise _reject(name, "it is an absolute path")
    parts = name.split("/")
    for part in parts:
        if part == "":
            raise _reject(name, "it has an empty path component (leading, trailing or '//')")
        if part in (".", ".."):
            raise _reject(name, f"it has a {part!r} component")
        if len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES:
            raise _reject(name, f"a component is longer than {MAX_COMPONENT_BYTES} bytes")
        if part.endswith(PART_SUFFIX) and part == parts[-1]:
            raise _reject(name, f"file names ending in {PART_SUFFIX!r} are reserved for downloads")
    return parts


def check_filename(name: str) -> str:
    """Validate a single file name (no directory part), e.g. one sent by a server."""
    parts = check_relative_name(name)
    if len(parts) != 1:
        raise _reject(name, "a file name may not contain '/'")
    return name


def safe_join(root: Path | str, name: str, *, root_is_real: bool = False) -> Path:
    """`root / name`, guaranteed to stay inside `root` even through existing symlinks.

    The root itself may be a symlink; only what lies below it is checked. A final component that
    is an existing symlink is rejected (the download would replace the link, not its target).
    `root_is_real`: `root` is already resolved (`os.path.realpath`), not resolved again (a
    download lane resolves it once for its files).
    """
    parts = check_relative_name(name)
    root_real = Path(root if root_is_real else os.path.realpath(root))
    candidate = root_real.joinpath(*parts)
    linked, final = _walk_below(str(root_real), parts)
    if linked:  # only a symlink below the root can lead elsewhere: the full check
        resolved = Path(os.path.realpath(candidate))
        if resolved != root_real and root_real not in resolved.parents:
            raise _reject(name, f"it resolves to {str(resolved)!r}, outside the download root "
                                f"{str(root_real)!r} (through a symlink)")
        final = _lstat(candidate)
    if final is not None and stat.S_ISLNK(final.st_mode):
        raise _reject(name, "the destination is an existing symlink")
    if final is not None and stat.S_ISDIR(final.st_mode):
        raise _reject(name, "the destination is an existing directory")
    return candidate


def _walk_below(root: str, parts: list[str]) -> tuple[bool, os.stat_result | None]:
    """lstat the components of ``root/parts`` below ``root`` (a few system calls instead of
    resolving the whole path): (whether one is a symlink, the last one's lstat, None when it
    does not exist)."""
    path, st = root, None
    for part in parts:
        path = os.path.join(path, part)
        st = _lstat(path)
        if st is None:
            return False, None  # nothing exists from here on: no symlink either
        if stat.S_ISLNK(st.st_mode):
            return True, None
    return False, st


def _lstat(path: str | Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


class SymlinkError(UnsafePathError):
    """A symlink where a downloaded file or its ``.part`` belongs (never followed)."""


def refuse_symlink(path: Path) -> None:
    """Raise SymlinkError, naming ``path``, if it is a symlink (checked with lstat)."""
    if path.is_symlink():
        raise SymlinkError(f"{str(path)!r} is a symlink (to {os.readlink(path)!r}) where a "
                           "downloaded file belongs; refusing to follow it (remove it to "
                           "let the file be written)")


def open_nofollow(path: Path, mode: str) -> io.FileIO:
    """Open a file under the download root for writing ("wb" or "ab", unbuffered) without
    following a symlink at its name: a planted link raises SymlinkError naming it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if mode == "ab" else os.O_TRUNC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_symlink(path)
        raise
    return io.FileIO(fd, mode, closefd=True)


def lstat_size(path: Path) -> int:
    """Size of the regular file at ``path`` (0 when absent); SymlinkError for a symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISLNK(st.st_mode):
        refuse_symlink(path)
    return st.st_size


def part_path(dest: Path) -> Path:
    """The partial-download file that belongs to `dest`."""
    return dest.with_name(dest.name + PART_SUFFIX)


def fsync_path(path: Path) -> None:
    """fsync a file or directory by name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(part: Path, dest: Path, *, sync_dir: bool = True,
                    sync_file: bool = True) -> None:
    """fsync ``part``, rename it over ``dest``, fsync the directory: after a crash the final
    name holds either nothing or the whole verified file. ``sync_dir=False`` and
    ``sync_file=False`` leave that to the caller (a group commit syncs once for many files,
    with ``sync_filesystems``, before it records them)."""
    if sync_file:
        fsync_path(part)
    os.replace(part, dest)
    if sync_dir:
        fsync_path(dest.parent)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _load_syncfs()


def can_sync_filesystem() -> bool:
    """Whether ``sync_filesystems`` flushes file contents too (Linux syncfs), so files may be
    renamed into place without an fsync each and made durable in groups."""
    return _SYNCFS is not None


def sync_filesystems(dirs: Iterable[Path]) -> None:
    """Make the writes and renames under these directories durable: one syncfs per
    filesystem where the system has it (file data and names), else an fsync of each
    directory (names only: files were fsynced one by one then)."""
    seen: set[int] = set()
    for path in dirs:
        if _SYNCFS is None:
            fsync_path(path)
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            device = os.fstat(fd).st_dev
            if device not in seen and _SYNCFS(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs of {path} failed: {os.strerror(err)}")
            seen.add(device)
        finally:
            os.close(fd)
