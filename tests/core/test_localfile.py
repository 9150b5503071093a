"""Files in watched folders are opened without ever blocking on a FIFO, and only regular files are read."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

import pytest

from transferd.discovery.gzipcheck import check_gzip_file, is_io_error
from transferd.discovery.manifest import load_manifest
from transferd.localfile import NotRegularFile, open_regular


def test_a_regular_file_opens_in_blocking_mode(tmp_path: Path) -> None:
    f = tmp_path / "a.fastq.gz"
    f.write_bytes(b"x" * 10)
    fd = open_regular(f)
    try:
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        assert os.read(fd, 100) == b"x" * 10
    finally:
        os.close(fd)


def test_a_fifo_is_refused_at_once_and_named(tmp_path: Path) -> None:
    fifo = tmp_path / "S_S1_L001_R1_001.fastq.gz"
    os.mkfifo(fifo)  # no writer: a plain open() for reading would block forever
    with pytest.raises(NotRegularFile, match="FIFO") as info:
        open_regular(fifo)
    assert info.value.filename == str(fifo)


def test_a_socket_and_a_directory_are_refused(tmp_path: Path) -> None:
    sock_path = tmp_path / "s.fastq.gz"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        with pytest.raises(OSError):  # sockets cannot be open()ed at all (ENXIO)
            open_regular(sock_path)
    with pytest.raises(NotRegularFile, match="directory"):
        open_regular(tmp_path)


def test_gzip_check_judges_a_fifo_as_a_lasting_finding_not_an_io_error(tmp_path: Path) -> None:
    fifo = tmp_path / "S_S1_L001_R1_001.fastq.gz"
    os.mkfifo(fifo)
    verdict = check_gzip_file(fifo)
    assert verdict is not None and "FIFO" in verdict
    assert not is_io_error(verdict)  # memoised for this file version: a real file put there later is a new one


def test_a_manifest_that_is_a_fifo_is_an_error_naming_the_file(tmp_path: Path) -> None:
    fifo = tmp_path / "drop.fastq-map.csv"
    os.mkfifo(fifo)
    manifest = load_manifest(fifo)
    assert manifest.rows == ()
    assert len(manifest.errors) == 1 and manifest.errors[0].startswith(f"{fifo}:1:") and "FIFO" in manifest.errors[0]
