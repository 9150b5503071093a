"""Fast checks of the benchmark's machinery (no servers beyond an in-process sink, no third-party tools)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import sys
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.data import LANES, READS, SAMPLES, ensure_run  # noqa: E402
from bench.measure import run_measured  # noqa: E402
from bench.report import RepRecord, check_targets, summarize  # noqa: E402
from bench.sink import Sink  # noqa: E402


def _gzip_members(data: bytes) -> int:
    """How many gzip members `data` holds (a raw decompressor stops after each one)."""
    members = 0
    while data:
        d = zlib.decompressobj(31)
        d.decompress(data)
        assert d.eof, "truncated gzip member"
        members += 1
        data = d.unused_data
    return members


def test_synthetic_run_is_valid_multi_member_fastq_of_the_requested_size(tmp_path: Path) -> None:
    member_plain = 40_000
    total = 3_000_000
    run = ensure_run(tmp_path / "run", total, seed=3, member_plain_bytes=member_plain)
    assert len(run.files) == SAMPLES * LANES * len(READS)
    assert len(run.samples) == SAMPLES
    member_max = max(f.size for f in run.files)  # generous bound: a file overshoots by < 1 member
    assert total <= run.total_bytes < total + len(run.files) * member_max
    names = {f.path.name for f in run.files}
    assert "BENCH01_S1_L001_R1_001.fastq.gz" in names and "BENCH08_S8_L004_R2_001.fastq.gz" in names
    assert [f.lane for f in run.lanes_of("BENCH03", "R2")] == [1, 2, 3, 4]
    for f in run.files[:4]:
        raw = f.path.read_bytes()
        assert len(raw) == f.size
        assert _gzip_members(raw) > 1
        lines = gzip.decompress(raw).split(b"\n")
        assert lines[-1] == b""
        records = [lines[i : i + 4] for i in range(0, len(lines) - 1, 4)]
        assert records
        for head, seq, plus, qual in records:
            assert head.startswith(b"@") and plus == b"+"
            assert len(seq) == len(qual) == 151
            assert set(seq) <= set(b"ACGTN")
    # The same request reuses the cached run; a different size rebuilds it.
    again = ensure_run(tmp_path / "run", total, seed=3, member_plain_bytes=member_plain)
    assert again.files == run.files


@pytest.fixture
async def sink_url() -> AsyncIterator[str]:
    runner = web.AppRunner(Sink().app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_sink_accepts_a_multipart_upload_from_aiobotocore(sink_url: str) -> None:
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url=sink_url, region_name="us-east-1", aws_access_key_id="k",
        aws_secret_access_key="s", config=config,
    ) as s3:  # fmt: skip
        client: Any = s3
        await client.create_bucket(Bucket="b")
        await client.head_bucket(Bucket="b")
        parts_data = [b"a" * (1024 * 1024 + 7), b"tail"]
        created = await client.create_multipart_upload(Bucket="b", Key="dir/obj.fastq.gz", ChecksumAlgorithm="CRC32")
        upload_id = created["UploadId"]
        done = []
        for number, body in enumerate(parts_data, start=1):
            resp = await client.upload_part(
                Bucket="b", Key="dir/obj.fastq.gz", UploadId=upload_id, PartNumber=number, Body=body,
                ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),
            )  # fmt: skip
            assert resp["ETag"].strip('"') == hashlib.md5(body).hexdigest()
            done.append({"PartNumber": number, "ETag": resp["ETag"]})
        listed = await client.list_parts(Bucket="b", Key="dir/obj.fastq.gz", UploadId=upload_id)
        assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, len(parts_data[0])), (2, 4)]
        uploads = await client.list_multipart_uploads(Bucket="b")
        assert [u["UploadId"] for u in uploads["Uploads"]] == [upload_id]
        completed = await client.complete_multipart_upload(
            Bucket="b", Key="dir/obj.fastq.gz", UploadId=upload_id, MultipartUpload={"Parts": done}
        )
        expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts_data)).hexdigest() + "-2"
        assert completed["ETag"].strip('"') == expected
        head = await client.head_object(Bucket="b", Key="dir/obj.fastq.gz")
        assert head["ContentLength"] == sum(map(len, parts_data))
        assert head["ETag"].strip('"') == expected
        await client.put_object(Bucket="b", Key="small", Body=b"xyz")
        await client.copy_object(Bucket="b", Key="copy", CopySource={"Bucket": "b", "Key": "small"})
        listing = await client.list_objects_v2(Bucket="b")
        assert {o["Key"]: o["Size"] for o in listing["Contents"]} == {
            "copy": 3,
            "dir/obj.fastq.gz": 1048587,
            "small": 3,
        }
        with pytest.raises(ClientError) as bad:
            await client.put_object(Bucket="b", Key="bad", Body=b"abc", ContentMD5=base64.b64encode(b"0" * 16).decode())
        assert bad.value.response["Error"]["Code"] == "BadDigest"
        with pytest.raises(ClientError) as missing:
            await client.head_object(Bucket="b", Key="nope")
        assert missing.value.response["Error"]["Code"] == "404"
        gone = await client.create_multipart_upload(Bucket="b", Key="aborted")
        await client.abort_multipart_upload(Bucket="b", Key="aborted", UploadId=gone["UploadId"])
        with pytest.raises(ClientError) as no_upload:
            await client.list_parts(Bucket="b", Key="aborted", UploadId=gone["UploadId"])
        assert no_upload.value.response["Error"]["Code"] == "NoSuchUpload"


def test_run_measured_reports_wall_cpu_and_peak_rss(tmp_path: Path) -> None:
    code = "b = bytearray(64 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); sum(range(2_000_000))"
    m = run_measured(
        [sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path, log_path=tmp_path / "log",
        timeout=30,
    )  # fmt: skip
    assert m.exit_code == 0 and not m.timed_out
    assert m.wall_s > 0 and m.cpu_s > 0
    assert m.peak_rss_bytes >= 64 * 1024 * 1024


def test_summary_and_targets_from_repetitions() -> None:
    gib = 1024**3

    def rec(key: str, phase: str, wall: float, cpu: float = 1.0, rss: int = 100, sleep: float = 0.0) -> RepRecord:
        return RepRecord(
            key=key, label=key, phase=phase, rep=1, ok=True, logical_bytes=gib, wall_s=wall, user_s=cpu,
            peak_rss_bytes=rss * 1024**2, fixed_sleep_s=sleep,
        )  # fmt: skip

    records = [
        rec("transferd-upload", "upload", 5.0),
        rec("transferd-upload", "upload", 7.0),
        rec("gencove-upload", "upload", 20.0, sleep=10.0),
        rec("awscli-upload", "upload", 6.0),
        rec("transferd-download", "download", 4.0, rss=250),
        rec("gencove-download", "download", 8.0),
    ]
    summaries = {s.key: s for s in summarize(records)}
    assert summaries["transferd-upload"].mb_s == pytest.approx(gib / 1e6 / 6.0, rel=0.05)
    assert summaries["gencove-upload"].transfer_only_mb_s == pytest.approx(gib / 1e6 / 10.0)
    assert summaries["gencove-upload"].transferd_x and summaries["gencove-upload"].transferd_x > 3
    checks = {c.name.split(" (")[0]: c.holds for c in check_targets(list(summaries.values()))}
    assert checks["upload vs gencove CLI"] is True
    assert checks["upload vs the faster of awscli / s5cmd"] is True
    assert checks["download vs gencove download"] is True
    assert checks["client CPU per GiB uploaded"] is True
    assert checks["client peak RSS"] is False


async def test_sink_decodes_an_aws_chunked_put_and_names_its_trailer(sink_url: str) -> None:
    """transferd sends single PUTs aws-chunked with a SHA-256 trailer: the sink keeps the data's size and md5."""
    body = b"ACGT" * 100_000
    sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
    framed = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 65536]), body[i : i + 65536]) for i in range(0, len(body), 65536)
    )
    framed += b"0\r\nx-amz-checksum-sha256:" + sha.encode() + b"\r\n\r\n"
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(body)),
        "x-amz-trailer": "x-amz-checksum-sha256",
    }
    async with aiohttp.ClientSession() as http:
        assert (await http.put(f"{sink_url}/b")).status == 200
        async with http.put(f"{sink_url}/b/obj", data=framed, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
            assert resp.headers["x-amz-checksum-sha256"] == sha
        async with http.head(f"{sink_url}/b/obj") as resp:
            assert resp.headers["Content-Length"] == str(len(body))
        async with http.put(f"{sink_url}/b/cut", data=framed[:1000], headers=headers) as resp:
            assert resp.status == 400 and "IncompleteBody" in await resp.text()
