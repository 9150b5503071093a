"""Pure parts of the upload engine: part sizing, the concatenated part cutter, the reader, the byte budget."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import zlib
from pathlib import Path

import pytest

from transferd.discovery.models import SourceFile
from transferd.upload.budget import ByteBudget
from transferd.upload.stream import (
    MAX_PARTS,
    MIN_PART_SIZE,
    MiB,
    PartBuffers,
    PartSpec,
    Segment,
    SourceChanged,
    SourceReader,
    part_size_for,
    plan_parts,
    segments,
    stat_changes,
)


def source(path: Path) -> SourceFile:
    st = path.stat()
    return SourceFile(path, st.st_size, st.st_mtime_ns, st.st_ino)


# -- part sizing ----------------------------------------------------------------------------------------------
def test_part_size_starts_at_the_configured_minimum_and_never_below_5_mib() -> None:
    assert part_size_for(0, 8 * MiB) == 8 * MiB
    assert part_size_for(100 * MiB, 8 * MiB) == 8 * MiB
    assert part_size_for(1, 1024) == MIN_PART_SIZE


def test_part_size_grows_so_10000_parts_are_never_exceeded() -> None:
    for total in (8 * MiB * MAX_PARTS, 8 * MiB * MAX_PARTS + 1, 700 * 1024**3, 4 * 1024**4):
        size = part_size_for(total, 8 * MiB)
        assert size % MiB == 0
        assert len(plan_parts(total, size)) <= MAX_PARTS
    assert part_size_for(8 * MiB * MAX_PARTS, 8 * MiB) == 8 * MiB  # exactly 10,000 parts fit
    assert part_size_for(8 * MiB * MAX_PARTS + 1, 8 * MiB) == 9 * MiB


def test_part_size_refuses_objects_beyond_s3_limits() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        part_size_for(5 * 1024**3 * MAX_PARTS + 1)


def test_plan_parts_cuts_equal_parts_and_a_short_last_one() -> None:
    assert plan_parts(0, 5) == (PartSpec(1, 0, 0),)
    assert plan_parts(5, 5) == (PartSpec(1, 0, 5),)
    assert plan_parts(12, 5) == (PartSpec(1, 0, 5), PartSpec(2, 5, 5), PartSpec(3, 10, 2))
    with pytest.raises(ValueError):
        plan_parts(10, 0)


# -- the cutter across file boundaries --------------------------------------------------------------------------
def test_segments_cross_file_boundaries_and_skip_empty_files() -> None:
    sizes = [3, 0, 4, 0, 0, 5]
    assert segments(sizes, 0, 3) == [Segment(0, 0, 3)]
    assert segments(sizes, 2, 4) == [Segment(0, 2, 1), Segment(2, 0, 3)]
    assert segments(sizes, 3, 9) == [Segment(2, 0, 4), Segment(5, 0, 5)]
    assert segments(sizes, 6, 6) == [Segment(2, 3, 1), Segment(5, 0, 5)]
    assert segments(sizes, 12, 0) == []
    with pytest.raises(ValueError, match="beyond"):
        segments(sizes, 10, 5)


def test_every_plan_covers_the_concatenation_exactly() -> None:
    sizes = [7, 0, 1, 13, 0, 2]
    total = sum(sizes)
    for part_size in range(1, total + 2):
        covered = []
        for spec in plan_parts(total, part_size):
            segs = segments(sizes, spec.offset, spec.size)
            assert sum(s.length for s in segs) == spec.size
            for s in segs:
                base = sum(sizes[: s.source])
                covered.extend(range(base + s.file_offset, base + s.file_offset + s.length))
        assert covered == list(range(total))


# -- the reader -----------------------------------------------------------------------------------------------
def test_reader_yields_the_concatenation_with_its_hashes(tmp_path: Path) -> None:
    blobs = [os.urandom(1000), b"", os.urandom(1), os.urandom(2500), b""]
    paths = []
    for i, blob in enumerate(blobs):
        p = tmp_path / f"f{i}.fastq.gz"
        p.write_bytes(blob)
        paths.append(source(p))
    whole = b"".join(blobs)
    with SourceReader(paths, md5=True, crc32=True) as reader:
        got = []
        for spec in plan_parts(len(whole), 700):
            part = reader.read(spec)
            body = bytes(part.body)
            assert body == whole[spec.offset : spec.end]
            assert part.md5 == hashlib.md5(body).hexdigest()
            assert part.crc32 == base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
            got.append(body)
        assert b"".join(got) == whole
        assert reader.sha256.hexdigest() == hashlib.sha256(whole).hexdigest()


def test_reader_into_a_reused_buffer_gives_the_same_parts_read_only(tmp_path: Path) -> None:
    blobs = [os.urandom(1000), b"", os.urandom(1), os.urandom(2500)]
    paths = []
    for i, blob in enumerate(blobs):
        p = tmp_path / f"f{i}.fastq.gz"
        p.write_bytes(blob)
        paths.append(source(p))
    whole = b"".join(blobs)
    pool = PartBuffers()
    with SourceReader(paths, md5=True, crc32=True) as reader:
        for spec in plan_parts(len(whole), 700):
            buf = pool.take(700) if spec.size == 700 else None
            part = reader.read(spec, into=buf)
            assert bytes(part.body) == whole[spec.offset : spec.end]
            assert part.md5 == hashlib.md5(whole[spec.offset : spec.end]).hexdigest()
            if isinstance(part.body, memoryview):
                assert part.body.readonly  # immutable for retries
            del part
            if buf is not None:
                pool.give(buf, room=700)
        assert reader.sha256.hexdigest() == hashlib.sha256(whole).hexdigest()


def test_part_buffers_are_reused_within_the_room_they_are_given() -> None:
    pool = PartBuffers()
    a, b = pool.take(100), pool.take(100)
    pool.give(a, room=150)
    pool.give(b, room=150)  # no room for a second free buffer: dropped
    assert pool.free_bytes == 100 and pool.take(100) is a
    pool.give(a, room=1000)
    pool.give(bytearray(200), room=1000)  # another part size: the old ones go
    assert pool.free_bytes == 200
    pool.trim(100)
    assert pool.free_bytes == 0


def test_reader_insists_on_order_for_the_whole_object_hash(tmp_path: Path) -> None:
    p = tmp_path / "a.fastq.gz"
    p.write_bytes(b"x" * 100)
    with SourceReader([source(p)], md5=False, crc32=False) as reader, pytest.raises(ValueError, match="order"):
        reader.read(PartSpec(2, 50, 50))


def test_reader_refuses_a_changed_or_replaced_source(tmp_path: Path) -> None:
    p = tmp_path / "a.fastq.gz"
    p.write_bytes(b"x" * 100)
    recorded = source(p)
    p.write_bytes(b"y" * 60)  # truncated and rewritten
    with (
        SourceReader([recorded], md5=False, crc32=False) as reader,
        pytest.raises(SourceChanged, match=r"a\.fastq\.gz"),
    ):
        reader.read(PartSpec(1, 0, 100))
    assert stat_changes([recorded]) and "a.fastq.gz" in stat_changes([recorded])[0]
    assert stat_changes([source(p)]) == []


# -- the byte budget ------------------------------------------------------------------------------------------
async def test_budget_bounds_bytes_and_serves_in_order() -> None:
    budget = ByteBudget(10)
    await budget.acquire(6)
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await budget.acquire(n)
        order.append(name)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(take("big", 8))
        tg.create_task(take("small", 1))  # fits now, but must not overtake the waiting big request
        await asyncio.sleep(0)
        assert order == [] and budget.used == 6
        budget.release(6)
    assert order == ["big", "small"] and budget.used == 9


async def test_budget_lets_an_oversized_request_through_alone() -> None:
    budget = ByteBudget(10)
    await budget.acquire(25)
    assert budget.used == 25
    budget.release(25)


async def test_budget_cancelled_waiter_gives_nothing_away() -> None:
    budget = ByteBudget(10)
    await budget.acquire(10)
    waiter = asyncio.create_task(budget.acquire(5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.release(10)
    assert budget.used == 0
    await budget.acquire(10)


# -- assignment helpers ---------------------------------------------------------------------------------------
def test_assignment_batches_hold_at_most_200_and_are_never_empty() -> None:
    from transferd.upload.assign import batches

    assert batches([]) == []
    assert [len(b) for b in batches(list(range(400)))] == [200, 200]  # no trailing empty batch at a multiple
    assert [len(b) for b in batches(list(range(401)))] == [200, 200, 1]


def test_a_sheet_entry_matches_only_our_upload_ids() -> None:
    from transferd.journal.uploads import AssignCandidate
    from transferd.upload.assign import matches

    cand = AssignCandidate(1, 1, "S1", "gncv://f", "P", None, "uploaded", {"R1": "u1", "R2": "u2"}, None)
    entry = {"client_id": "S1", "fastq": {"r1": {"upload": "u1"}, "r2": {"upload": "u2"}}}
    assert matches(entry, cand)
    assert not matches({**entry, "fastq": {"r1": {"upload": "u1"}}}, cand)  # R2 missing
    assert not matches({**entry, "fastq": {"r1": {"upload": "old"}, "r2": {"upload": "u2"}}}, cand)
    single = AssignCandidate(2, 1, "S2", "gncv://f", "P", None, "uploaded", {"R1": "u3"}, None)
    assert matches({"client_id": "S2", "fastq": {"r1": {"upload": "u3"}, "r2": None}}, single)
