"""Opening files found in watched folders: only regular files, and never in a way that can block.

A FIFO (or socket, or device node) can carry a FASTQ or manifest name. A plain ``open()`` of a FIFO for reading
blocks until a writer appears, which would freeze a discovery scan, and with it the watch root and a graceful
stop, for good. ``O_NONBLOCK`` makes that open return at once; ``fstat`` on the open descriptor (no race with a
rename) then tells what it is, and regular files get their blocking mode back.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)


class NotRegularFile(OSError):
    """The path is not a regular file; ``strerror`` says what it is instead."""


def kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of the regular file at ``path`` (the caller closes it).

    Raises NotRegularFile for anything else, OSError as ``os.open`` does (ENOENT, EACCES, ...)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file: it is {kind_of(st.st_mode)}", os.fspath(path))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular_binary(path: str | os.PathLike[str]) -> BinaryIO:
    """``open_regular`` as a buffered binary file object."""
    return os.fdopen(open_regular(path), "rb")


def read_regular_bytes(path: Path) -> bytes:
    with open_regular_binary(path) as fh:
        return fh.read()
