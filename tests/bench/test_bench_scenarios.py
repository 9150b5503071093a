"""The low-pass and WAN scenarios' machinery: the low-pass run, the delaying proxy (a real process), s3rver's
request counter and checksum answer (a real s3rver, when installed), requests per object and the targets."""

from __future__ import annotations

import base64
import gzip
import hashlib
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import tools  # noqa: E402
from bench.data import ensure_lowpass_run  # noqa: E402
from bench.report import RepRecord, check_targets, render_markdown, summarize  # noqa: E402
from bench.reqcount import RequestCounter, idle_gap_s, s3rver_counts  # noqa: E402
from bench.run import parse_args  # noqa: E402
from bench.s3rver import ACCESS_KEY, SECRET_KEY, S3rver  # noqa: E402
from bench.servers import WanProxy  # noqa: E402
from tests.helpers import s3_client  # noqa: E402
from transferd.sandbox import SandboxProcess  # noqa: E402


def test_lowpass_run_is_one_lane_per_sample_of_about_the_requested_size(tmp_path: Path) -> None:
    run = ensure_lowpass_run(tmp_path / "lp", samples=12, file_bytes=30_000)
    assert len(run.samples) == 12 and len(run.files) == 24
    assert {f.lane for f in run.files} == {1}
    names = {f.path.name for f in run.files}
    assert "BENCH01_S1_L001_R1_001.fastq.gz" in names and "BENCH12_S12_L001_R2_001.fastq.gz" in names
    for f in run.files:
        assert 30_000 <= f.size < 2 * 30_000  # whole gzip members sized to the file: a small overshoot
    assert gzip.decompress(run.files[0].path.read_bytes()).startswith(b"@A00953:")


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """An HTTP server: POST answers the body's sha256, GET /bytes/N answers N bytes."""

    async def digest(request: web.Request) -> web.Response:
        return web.Response(text=hashlib.sha256(await request.read()).hexdigest())

    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.match_info["n"]))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/", digest)
    app.router.add_get("/bytes/{n}", blob)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_wan_proxy_adds_its_delay_each_way_and_carries_bodies_intact(upstream: str, tmp_path: Path) -> None:
    delay = 0.1
    with WanProxy(upstream, delay * 1000, tmp_path / "proxy.log") as proxy:
        async with aiohttp.ClientSession() as session:
            start = time.monotonic()
            async with session.get(f"{proxy.url}/bytes/10") as resp:
                assert await resp.read() == b"x" * 10
            first = time.monotonic() - start  # a new connection: handshake round trip + request round trip
            start = time.monotonic()
            async with session.get(f"{proxy.url}/bytes/10") as resp:
                await resp.read()
            again = time.monotonic() - start  # the same connection: one round trip
            body = bytes(range(256)) * (48 * 1024)  # 12 MiB each way, past one window's worth in flight
            async with session.post(proxy.url + "/", data=body) as resp:
                assert await resp.text() == hashlib.sha256(body).hexdigest()
            async with session.get(f"{proxy.url}/bytes/{len(body)}") as resp:
                assert len(await resp.read()) == len(body)
    assert first >= 4 * delay
    assert 2 * delay <= again < first


@pytest.fixture
def s3rver(tmp_path: Path) -> S3rver:
    if shutil.which("node") is None or not (tools.s3rver_package_dir() / "package.json").exists():
        pytest.skip("s3rver is not installed (bench/run.py installs it into bench/.node on first use)")
    return S3rver(tmp_path / "data", ["b"], tmp_path / "s3rver.log")


def _chunked_put_headers(body: bytes) -> dict[str, str]:
    """A streaming (aws-chunked) PutObject with a SHA-256 trailer, as transferd sends one; s3rver does not check
    signatures (allowMismatchedSignatures), so a well-formed but fake one does."""
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return {
        "Authorization": f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{now[:8]}/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={'0' * 64}",
        "x-amz-date": now,
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(body)),
        "x-amz-trailer": "x-amz-checksum-sha256",
        "User-Agent": "bench-test/1",
    }


def _chunked(body: bytes, checksum: str, size: int = 65_536) -> bytes:
    frames = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)]
    return b"".join(frames) + b"0\r\nx-amz-checksum-sha256:" + checksum.encode() + b"\r\n\r\n"


async def test_s3rver_counts_every_request_and_refuses_a_bad_sha256_trailer_without_dying(s3rver: S3rver) -> None:
    body = b"ACGT" * 50_000
    good = base64.b64encode(hashlib.sha256(body).digest()).decode()
    bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with s3rver:
        before = s3rver_counts(s3rver.url)
        async with aiohttp.ClientSession() as http:
            url = f"{s3rver.url}/b/dir/ok.fastq.gz"
            async with http.put(url, data=_chunked(body, good), headers=_chunked_put_headers(body)) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.headers["x-amz-checksum-sha256"] == good  # verified and named, as S3 does
            async with http.put(url + ".bad", data=_chunked(body, bad), headers=_chunked_put_headers(body)) as resp:
                # refused as S3 refuses it, and the server lives on (it used to die of it); counted all the same
                assert resp.status == 400 and "<Code>BadDigest</Code>" in await resp.text()
        async with s3_client(s3rver.url, ACCESS_KEY, SECRET_KEY, max_attempts=1) as s3:
            await s3.put_object(Bucket="b", Key="plain", Body=b"abc")
            head = await s3.head_object(Bucket="b", Key="dir/ok.fastq.gz")
            assert head["ContentLength"] == len(body)  # stored decoded, without the framing
            await s3.list_objects_v2(Bucket="b")
            with pytest.raises(ClientError):
                await s3.head_object(Bucket="b", Key="dir/ok.fastq.gz.bad")  # nothing of it stored
        after = s3rver_counts(s3rver.url)
    counted = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    assert counted == {
        "PutObject bench-test": 2,
        "PutObject aiobotocore": 1,
        "HeadObject aiobotocore": 2,
        "ListObjects aiobotocore": 1,
    }


def test_idle_gap_is_the_longest_time_without_a_request_in_flight() -> None:
    def entry(end: str, duration: float) -> dict[str, object]:
        return {"time": f"2026-12-04T18:00:{end}+00:00", "duration": duration}

    # 00.0-01.0, 00.5-02.0 overlap; then nothing until 12.0 (the sleep); 12.0-12.5
    entries = [entry("01.000", 1.0), entry("02.000", 1.5), entry("12.500", 0.5)]
    assert idle_gap_s(entries) == pytest.approx(10.0)
    assert idle_gap_s([]) == 0.0


def _rec(key: str, scenario: str, wall: float, objects: int, api: int, s3: int, sleep: float = 0.0) -> RepRecord:
    return RepRecord(
        key=key, label=key, phase="upload", rep=1, ok=True, logical_bytes=10**9, wall_s=wall, fixed_sleep_s=sleep,
        scenario=scenario, objects=objects, api_requests={"uploads-post-data": api}, s3_requests={"PutObject x": s3},
    )  # fmt: skip


def test_lowpass_and_wan_targets_from_requests_and_working_time() -> None:
    records = [
        _rec("transferd-upload", "lowpass", 4.0, 768, 790, 768),
        _rec("gencove-upload", "lowpass", 15.0, 768, 771, 768, sleep=10.0),
        _rec("s5cmd-upload", "lowpass", 5.0, 768, 0, 768),
        _rec("transferd-upload", "wan-lowpass", 10.0, 768, 790, 768),
        _rec("gencove-upload", "wan-lowpass", 50.0, 768, 771, 768, sleep=10.0),
    ]
    summaries = summarize(records)
    by = {(s.scenario, s.key): s for s in summaries}
    gen = by[("lowpass", "gencove-upload")]
    assert gen.working_s == pytest.approx(5.0)
    assert gen.requests_per_object == pytest.approx((771 + 768) / 768)
    assert by[("lowpass", "transferd-upload")].api_per_object == pytest.approx(790 / 768)
    checks = {c.name: c for c in check_targets(summaries)}
    assert checks["low-pass: upload vs gencove CLI working time"].holds is True  # 5.0 / 4.0 = 1.25
    assert checks["low-pass: upload vs s5cmd"].holds is True
    # transferd 790 + 768 = 1558 requests; allowed: gencove's 771 + 768 = 1539, plus 16 per run = 1555
    assert checks["low-pass: requests per object (API + S3)"].holds is False
    assert checks["WAN: low-pass: upload vs gencove CLI working time"].holds is False  # 40 / 10 = 4x < 5x
    assert "upload vs gencove CLI (wall, as the user waits)" not in checks  # no standard run, no standard targets
    meta = {
        "started": "2026-12-04T18:00:00+00:00",
        "config": {"reps": 1, "files": 0, "samples": 8, "lanes": 4, "logical_bytes": 0, "s3_server": "s3rver"},
        "scenarios": {
            "lowpass": {"files": 768, "samples": 384, "lanes": 1, "logical_bytes": 10**9, "delay_ms": 0},
            "wan-lowpass": {"files": 768, "samples": 384, "lanes": 1, "logical_bytes": 10**9, "delay_ms": 50},
        },
        "machine": {"nproc": 2, "cpu_model": "x", "memory_gib": 1, "kernel": "k", "loadavg_at_start": [0, 0, 0]},
        "versions": {},
    }
    text = render_markdown(meta, summaries, check_targets(summaries))
    assert "## Low-pass (loopback)" in text and "## WAN: low-pass" in text and "50 ms added each way" in text
    assert "| 2.03 (1.03 + 1.00) |" in text  # transferd: (790 + 768) / 768


def test_scenario_flags_default_to_the_standard_run_only(tmp_path: Path) -> None:
    assert parse_args([]).scenario == ["standard"]
    args = parse_args(["--scenario", "wan,lowpass", "--scenario", "lowpass", "--gib", "0.5"])
    assert args.scenario == ["lowpass", "wan"] and args.wan_gib == 0.5 and args.lowpass_file_mb == 2.0
    assert args.lowpass_samples == 384 and args.wan_delay_ms == 50.0 and args.transferd_config is None
    for bad in (["--scenario", "lan"], ["--lowpass-file-mb", "0"], ["--transferd-config", str(tmp_path / "no")]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_request_counter_counts_only_the_gencove_api_requests_after_its_mark(sandbox: SandboxProcess) -> None:
    control = sandbox.control
    control.api("GET", "/api/v2/projects/")  # before the mark: not counted
    counter = RequestCounter(control, s3rver_url=None)
    mark = counter.mark()
    control.api("GET", "/api/v2/projects/")
    control.api("GET", f"/api/v2/project-samples/{sandbox.info.project_id}")
    control.api("GET", "/api/v2/projects/")
    control.faults()  # a control call: not a Gencove API request
    counts = counter.since(mark)
    assert counts.api == {"projects": 2, "project-samples": 1}
    assert counts.s3 == {} and counts.total == 3
    assert len(counts.api_entries) == 3 and counts.api_idle_gap_s >= 0.0
