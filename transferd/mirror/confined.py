"""Writes confined to the download destination: below the root, no symbolic link is ever followed.

The destination (or a client folder inside it) is writable by lab users, so a planted symlink must not turn a
download into a write elsewhere. Every folder below the root is opened one component at a time relative to its
parent's descriptor with O_NOFOLLOW (openat-style), files are created with O_EXCL | O_NOFOLLOW in the folder
descriptor, and a rename happens inside that same descriptor. A symlinked component is refused with
`PathRefused`, which names the path. The root itself is the configured path (it may be a symlink to a mount).

Temp files live in a name space no deliverable takes: `.<name>.<file id>.part` (shortened to fit NAME_MAX).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transferd.mirror.template import safe_component

NAME_MAX = 255  # bytes, Linux's limit for one path component
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
PART_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW


@dataclass(frozen=True, slots=True)
class RootCheck:
    """What the destination looked like when it was last found usable: checked again on the open descriptor of
    the root at every write, so a share unmounted meanwhile is never written into (its bare mount point is on
    another device and lacks the marker)."""

    dev: int | None  # None: not known (only the marker is checked)
    marker: str = ""

    def verify(self, fd: int, root: Path) -> None:
        if self.dev is not None and os.fstat(fd).st_dev != self.dev:
            raise DestinationDown(errno.ENODEV, f"{root} is no longer the file system it was (share unmounted?)")
        if self.marker and lstat_in(fd, self.marker) is None:
            raise DestinationDown(errno.ENOENT, f"{root / self.marker} is missing (share not mounted?)")


class PathRefused(OSError):
    """A path the mirror will not write through (a symlink, not a folder, swapped while in use)."""

    def __str__(self) -> str:
        return self.strerror or "path refused"  # the message names the path; no "[Errno n]" prefix


class DestinationDown(PathRefused):
    """The destination is not the one to write into now (unmounted share, missing marker): pause, retry later."""


def made_root(destination: Path) -> Path:
    """The destination's absolute path as configured (it may itself be a symlink, to a mount: trusted), made
    when missing. Journal paths keep this form, so they do not change when the link's target does."""
    os.makedirs(destination, exist_ok=True)
    return Path(os.path.abspath(destination))


def part_name(name: str, file_id: str) -> str:
    """The temp name of `name` while file `file_id` downloads; fits NAME_MAX whatever the name's length."""
    tail = f".{safe_component(file_id)}.part"
    room = NAME_MAX - 1 - len(tail.encode())
    head = name.encode()[:room].decode(errors="ignore")  # never split a UTF-8 sequence
    return f".{head}{tail}"


def _kind(dir_fd: int, name: str) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "not a folder"
    return "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"


def open_dir(root: Path, parts: Sequence[str], *, create: bool, check: RootCheck | None = None) -> int | None:
    """A descriptor of `root/parts...`, every component opened without following symlinks and created (0755)
    when missing if `create`; None when missing and not `create`. The caller closes it. `check` is verified on
    the root's descriptor first (raises DestinationDown)."""
    fd = os.open(root, DIR_FLAGS)
    here = root
    try:
        if check is not None:
            check.verify(fd, root)
        for name in parts:
            here = here / name
            try:
                child = os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                try:
                    child = os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as e:
                    raise _refused(e, fd, name, here) from None
            except OSError as e:
                raise _refused(e, fd, name, here) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refused(e: OSError, dir_fd: int, name: str, path: Path) -> OSError:
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        return PathRefused(e.errno, f"{path} is {_kind(dir_fd, name)}; refusing to write through it")
    return e


def lstat_in(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_part(dir_fd: int, name: str, path: Path, *, ours: bool) -> int:
    """Open the temp file `name` for appending. An existing one is continued only when it is `ours` (the journal
    says so) and a plain, singly linked file; any other regular file there is removed and a new one made with
    O_EXCL. A symlink or anything that is not a regular file is refused."""
    st = lstat_in(dir_fd, name)
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise PathRefused(errno.ELOOP, f"{path} is {what}; refusing to write through it")
        if ours and st.st_nlink == 1:
            try:
                fd = os.open(name, PART_FLAGS, dir_fd=dir_fd)
            except OSError as e:
                raise _refused(e, dir_fd, name, path) from None
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                return fd
            os.close(fd)
            raise PathRefused(errno.EBUSY, f"{path} was replaced while being opened; refusing it")
        os.unlink(name, dir_fd=dir_fd)  # not ours: never write into a file someone else made
    try:
        return os.open(name, PART_FLAGS | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
    except FileExistsError:
        raise PathRefused(errno.EEXIST, f"{path} appeared while being created; refusing it") from None


def same_file(fd: int, dir_fd: int, name: str) -> bool:
    """Whether `name` in the folder is still the file open as `fd` (nobody swapped it)."""
    st = lstat_in(dir_fd, name)
    mine = os.fstat(fd)
    return st is not None and (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def place(fd: int, dir_fd: int, part: str, dest: str, path: Path) -> int:
    """fsync the verified file, rename it over `dest` in the same folder, fsync the folder; its mtime_ns.
    The name renamed is checked to be the very file that was written and verified."""
    os.fsync(fd)
    if not same_file(fd, dir_fd, part):
        raise PathRefused(errno.EBUSY, f"{path}: its temp file was replaced while downloading; not placing it")
    os.replace(part, dest, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    if not same_file(fd, dir_fd, dest):  # swapped between the check and the rename: never leave that in place
        with contextlib.suppress(OSError):
            os.unlink(dest, dir_fd=dir_fd)
        raise PathRefused(errno.EBUSY, f"{path}: its temp file was replaced during the rename; removed it")
    os.fsync(dir_fd)
    return os.fstat(fd).st_mtime_ns


def write_atomic(root: Path, relative: Path, data: bytes, tag: str, check: RootCheck | None = None) -> None:
    """Write `data` to `root/relative` whole or not at all, through the same confinement (a small file)."""
    dir_fd = open_dir(root, relative.parts[:-1], create=True, check=check)
    assert dir_fd is not None
    name = relative.name
    tmp = part_name(name, tag)
    path = root / relative
    try:
        fd = open_part(dir_fd, tmp, path.with_name(tmp), ours=False)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            place(fd, dir_fd, tmp, name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                if same_file(fd, dir_fd, tmp):
                    os.unlink(tmp, dir_fd=dir_fd)
            raise
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def read_in(root: Path, relative: Path) -> bytes | None:
    """The content of a regular file `root/relative` reached without following symlinks; None when absent."""
    dir_fd = open_dir(root, relative.parts[:-1], create=False)
    if dir_fd is None:
        return None
    try:
        try:
            fd = os.open(relative.name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _refused(e, dir_fd, relative.name, root / relative) from None
        with os.fdopen(fd, "rb") as f:
            return f.read()
    finally:
        os.close(dir_fd)
