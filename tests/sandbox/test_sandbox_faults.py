"""Fault injection: API errors and latency, S3 errors/resets/expired credentials, download faults."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError
from helpers import s3_client, wait_for

from transferd.sandbox import SandboxProcess

V2 = "/api/v2"
MIB = 1024 * 1024


def test_api_status_faults_then_recovery(sandbox: SandboxProcess) -> None:
    c = sandbox.control
    c.add_fault(target="api", endpoint="sample-sheet", method="GET", status=503, times=2, retry_after=1)
    statuses = [c.request("GET", f"{V2}/sample-sheet/")[0] for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert c.faults() == []  # spent
    entries = c.log(target="api", endpoint="sample-sheet")
    assert [e["fault"] for e in entries] == ["status 503", "status 503", None]

    c.add_fault(target="api", endpoint="projects", status=429, retry_after=2)
    status, body = c.request("GET", f"{V2}/projects/")
    assert status == 429 and "throttled" in body["detail"]
    c.add_fault(target="api", endpoint=r"^/api/v2/projects/?$", status=503, maintenance=True)
    status, body = c.request("GET", f"{V2}/projects/")
    assert status == 503 and body["maintenance"] is True and body["maintenance_eta"]
    assert c.request("GET", f"{V2}/projects/")[0] == 200


def test_api_latency_and_retry_after_header(sandbox: SandboxProcess) -> None:
    c = sandbox.control
    c.add_fault(target="api", endpoint="file-types", latency=0.4)
    started = time.monotonic()
    assert c.request("GET", f"{V2}/file-types/")[0] == 200
    assert time.monotonic() - started >= 0.4
    assert c.faults()[0]["remaining"] is None  # latency stays until cleared
    c.clear_faults()
    assert c.faults() == []

    import urllib.error
    import urllib.request

    c.add_fault(target="api", endpoint="projects", status=429, retry_after=3)
    request = urllib.request.Request(
        sandbox.info.api_url + f"{V2}/projects/", headers={"Authorization": f"Api-Key {sandbox.info.api_key}"}
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=10)
    assert excinfo.value.code == 429 and excinfo.value.headers["Retry-After"] == "3"


def test_bad_rules_are_rejected_whole(sandbox: SandboxProcess) -> None:
    c = sandbox.control
    status, body = c.request(
        "POST", "/_sandbox/faults", [{"target": "api", "status": 503}, {"target": "s3", "sttus": 1}]
    )
    assert status == 400 and "sttus" in body["detail"]
    assert c.faults() == []


async def _multipart(s3: Any, bucket: str, key: str, sizes: list[int]) -> None:
    created = await s3.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    for number, size in enumerate(sizes, start=1):
        done = await s3.upload_part(
            Bucket=bucket, Key=key, UploadId=created["UploadId"], PartNumber=number, Body=bytes([number]) * size
        )
        parts.append({"PartNumber": number, "ETag": done["ETag"]})
    await s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=created["UploadId"], MultipartUpload={"Parts": parts}
    )


def _credentials(sandbox: SandboxProcess) -> dict[str, str]:
    return sandbox.control.api("POST", f"{V2}/upload-credentials/", {}, expect=[201])


async def test_s3_slowdown_and_reset_on_upload_part_are_retried(sandbox: SandboxProcess) -> None:
    c, info = sandbox.control, sandbox.info
    upload = c.api("POST", f"{V2}/uploads-post-data/", {"destination_path": "gncv://mp/S1_R1.fastq.gz"})
    c.add_faults(
        [
            {"target": "s3", "operation": "UploadPart", "part": 2, "status": 503, "code": "SlowDown", "times": 1},
            {"target": "s3", "operation": "UploadPart", "part": 3, "reset": True, "times": 1},
        ]
    )
    creds = _credentials(sandbox)
    async with s3_client(info.s3_url, creds["access_key"], creds["secret_key"], creds["token"]) as s3:
        await _multipart(s3, info.bucket, upload["s3"]["object_name"], [5 * MIB, 5 * MIB, 1000])
        head = await s3.head_object(Bucket=info.bucket, Key=upload["s3"]["object_name"])
    assert head["ContentLength"] == 10 * MIB + 1000 and head["ETag"].endswith('-3"')
    parts = [(e["part"], e["status"], e["fault"]) for e in c.log(target="s3", operation="UploadPart")]
    assert parts == [(1, 200, None), (2, 503, "status 503 SlowDown"), (2, 200, None), (3, 0, "reset"), (3, 200, None)]
    reset = c.log(target="s3", operation="UploadPart")[3]
    assert 0 < reset["bytes_in"] < 1000  # part of the body was read before the line dropped
    done = c.log(target="s3", operation="CompleteMultipartUpload")
    assert [e["status"] for e in done] == [200]
    status = c.api("POST", f"{V2}/uploads-post-data/", {"destination_path": "gncv://mp/S1_R1.fastq.gz"})
    assert status["last_status"]["status"] == "succeeded"


async def test_s3_error_bodies_pass_through_unchanged(sandbox: SandboxProcess) -> None:
    info = sandbox.info
    creds = _credentials(sandbox)
    sandbox.control.add_fault(target="s3", operation="PutObject", status=500, times=5)
    async with s3_client(info.s3_url, creds["access_key"], creds["secret_key"], creds["token"], max_attempts=1) as s3:
        with pytest.raises(ClientError) as excinfo:
            await s3.put_object(Bucket=info.bucket, Key="k", Body=b"x")
        assert excinfo.value.response["Error"]["Code"] == "InternalError"
        sandbox.control.clear_faults()
        with pytest.raises(ClientError) as excinfo:  # moto's own XML error, relayed
            await s3.get_object(Bucket=info.bucket, Key="missing")
        assert excinfo.value.response["Error"]["Code"] == "NoSuchKey"


async def test_expired_credentials_get_expired_token(sandbox: SandboxProcess) -> None:
    c, info = sandbox.control, sandbox.info
    c.add_fault(credentials_ttl=0, times=1)
    expired = _credentials(sandbox)
    fresh = _credentials(sandbox)
    assert fresh["access_key"] != expired["access_key"] and fresh["expiry_time"] > expired["expiry_time"]
    async with s3_client(info.s3_url, expired["access_key"], expired["secret_key"], expired["token"]) as s3:
        with pytest.raises(ClientError) as excinfo:
            await s3.put_object(Bucket=info.bucket, Key="k", Body=b"data")
    error = excinfo.value.response
    assert error["Error"]["Code"] == "ExpiredToken"
    assert error["Error"]["Message"] == "The provided token has expired."
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    async with s3_client(info.s3_url, fresh["access_key"], fresh["secret_key"], fresh["token"]) as s3:
        await s3.put_object(Bucket=info.bucket, Key="k", Body=b"data")
    # Keys the sandbox never issued pass (other tools may use the S3 server).
    async with s3_client(info.s3_url, "AKIAOTHERTOOL", "secret") as s3:
        await s3.put_object(Bucket=info.bucket, Key="k2", Body=b"data")
    assert [e["status"] for e in c.log(target="s3", operation="PutObject")] == [400, 200, 200]

    c.set_settings(credentials_ttl=1.0)
    short = _credentials(sandbox)
    async with s3_client(info.s3_url, short["access_key"], short["secret_key"], short["token"]) as s3:
        await s3.put_object(Bucket=info.bucket, Key="k3", Body=b"data")
        deadline = time.monotonic() + 5
        while True:  # the key works until its expiry passes, then S3 says ExpiredToken
            try:
                await s3.put_object(Bucket=info.bucket, Key="k3", Body=b"data")
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "ExpiredToken"
                break
            assert time.monotonic() < deadline, "short-lived credentials never expired"
            await asyncio.sleep(0.1)


async def _download(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.read()


def _succeeded_file(sandbox: SandboxProcess, size: int) -> dict[str, Any]:
    c = sandbox.control
    sample = c.seed_sample(sandbox.info.project_id, "D1", r1_size=size, r2_size=0)

    def ready() -> dict[str, Any] | None:
        detail = c.sample(sample["id"])
        return detail if detail["last_status"]["status"] == "succeeded" else None

    detail = wait_for(ready, 10, message="seeded sample to succeed")
    return next(f for f in detail["files"] if f["file_type"] == "fastq-r1")


async def test_download_faults(sandbox: SandboxProcess) -> None:
    c = sandbox.control
    sample_file = _succeeded_file(sandbox, 300_000)
    url, checksum = sample_file["download_url"], sample_file["checksum_sha256"]

    c.add_fault(target="download", corrupt=True, times=1)
    status, data = await _download(url)
    assert status == 200 and len(data) == 300_000 and hashlib.sha256(data).hexdigest() != checksum
    status, data = await _download(url)
    assert hashlib.sha256(data).hexdigest() == checksum

    c.add_fault(target="download", reset_after_bytes=1000, times=1)
    with pytest.raises(aiohttp.ClientPayloadError):
        await _download(url)
    assert hashlib.sha256((await _download(url))[1]).hexdigest() == checksum
    entries = c.log(target="download")
    assert [(e["fault"], e["bytes_out"]) for e in entries[-2:]] == [("reset after 1000 bytes", 1000), (None, 300_000)]

    c.add_fault(target="download", status=503, file_type="fastq-r1")
    assert (await _download(url))[0] == 503
    bad_signature = url.replace("sig=", "sig=0")
    assert (await _download(bad_signature))[0] == 403


async def test_url_expiry(sandbox: SandboxProcess) -> None:
    c = sandbox.control
    _succeeded_file(sandbox, 1000)
    sample_id = c.samples()[0]["id"]
    c.add_fault(url_ttl=1, times=1)
    short_url = c.sample(sample_id)["files"][0]["download_url"]
    long_url = c.sample(sample_id)["files"][0]["download_url"]
    assert (await _download(short_url))[0] == 200
    deadline = time.monotonic() + 5
    while (await _download(short_url))[0] != 403:
        assert time.monotonic() < deadline, "signed URL did not expire"
        await asyncio.sleep(0.2)
    status, body = await _download(short_url)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body and b"expired" in body
    assert (await _download(long_url))[0] == 200  # a re-fetched sample has fresh URLs
