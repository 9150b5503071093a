"""The sandbox as a process: clean shutdown, no orphaned moto, external S3 mode, start-up errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import botocore.session
import pytest
from helpers import s3_client, wait_for

from transferd.sandbox import SandboxProcess, SandboxStartError
from transferd.sandbox.spawn import child_env


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_s3_env_reaches_moto_and_sigterm_stops_everything() -> None:
    proc = SandboxProcess("--sample-delay", "0", "--s3-env", "S3_UPLOAD_PART_MIN_SIZE=256")
    info = proc.start()
    try:
        (moto_pid,) = children_of(info.pid)
        async with s3_client(info.s3_url, "any", "any") as s3:  # tiny parts: moto got the override
            created = await s3.create_multipart_upload(Bucket=info.bucket, Key="tiny")
            parts = []
            for number in (1, 2):
                done = await s3.upload_part(
                    Bucket=info.bucket, Key="tiny", UploadId=created["UploadId"], PartNumber=number, Body=b"x" * 300
                )
                parts.append({"PartNumber": number, "ETag": done["ETag"]})
            await s3.complete_multipart_upload(
                Bucket=info.bucket, Key="tiny", UploadId=created["UploadId"], MultipartUpload={"Parts": parts}
            )
        assert proc.stop() == 0
        wait_for(lambda: not alive(moto_pid), 5, message="moto to exit with the sandbox")
    finally:
        proc.close()


def test_killed_sandbox_leaves_no_moto_behind() -> None:
    with SandboxProcess() as proc:
        (moto_pid,) = children_of(proc.info.pid)
        os.kill(proc.info.pid, signal.SIGKILL)
        # Nobody stops moto now (the process group is not killed until the block ends): its watchdog must.
        wait_for(lambda: not alive(moto_pid), 5, message="orphaned moto to exit")


def test_external_s3_endpoint_starts_no_moto(sandbox: SandboxProcess) -> None:
    upstream = sandbox.info.s3_upstream_url
    args = ("--s3-endpoint", upstream, "--bucket", "ext-uploads", "--deliverables-bucket", "ext-deliverables")
    with SandboxProcess(*args, "--sample-delay", "0", "--api-key", "fixed-key") as proc:
        assert children_of(proc.info.pid) == []
        assert (proc.info.api_key, proc.info.s3_upstream_url) == ("fixed-key", upstream)
        sample = proc.control.seed_sample(proc.info.project_id, "E1", r1_size=10, r2_size=0)

        def done() -> bool:
            return proc.control.sample(sample["id"])["last_status"]["status"] == "succeeded"

        wait_for(done, 10)


def test_start_failure_reports_stderr() -> None:
    with pytest.raises(SandboxStartError, match=r"(?s)exited with code 2.*must not be negative"):
        SandboxProcess("--sample-delay", "-1", startup_timeout=20).start()


def test_sandbox_exits_when_its_user_is_killed() -> None:
    """A test run killed with SIGKILL cannot clean up: the sandbox watches it and leaves by itself."""
    script = (
        "import sys, time\n"
        "from transferd.sandbox import SandboxProcess\n"
        "proc = SandboxProcess(); info = proc.start()\n"
        "print(info.pid, flush=True); time.sleep(60)\n"
    )
    user = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=child_env(), text=True, start_new_session=True
    )
    try:
        assert user.stdout is not None
        sandbox_pid = int(user.stdout.readline())
        (moto_pid,) = children_of(sandbox_pid)
        user.kill()
        user.wait(timeout=5)
        wait_for(lambda: not alive(sandbox_pid) and not alive(moto_pid), 10, message="sandbox and moto to exit")
    finally:
        if user.poll() is None:
            user.kill()
            user.wait(timeout=5)
        if user.stdout is not None:
            user.stdout.close()


def test_direct_download_urls_are_presigned_s3_urls(sandbox: SandboxProcess) -> None:
    """`--direct-download-urls`: download URLs point at the S3 server itself (SigV4 query), as the real
    service's do; they serve the object, Ranges, and the default filename in response-content-disposition."""
    upstream = sandbox.info.s3_upstream_url
    args = ("--s3-endpoint", upstream, "--bucket", "dl-uploads", "--deliverables-bucket", "dl-deliverables")
    with SandboxProcess(*args, "--sample-delay", "0", "--direct-download-urls") as proc:
        sample = proc.control.seed_sample(proc.info.project_id, "D1", r1_size=5000, r2_size=0, seed=3)
        wait_for(lambda: proc.control.sample(sample["id"])["last_status"]["status"] == "succeeded", 10)
        files = {f["file_type"]: f for f in proc.control.sample(sample["id"])["files"]}
        r1 = files["fastq-r1"]
        url = r1["download_url"]
        assert url.startswith(upstream + "/dl-deliverables/") and "X-Amz-Signature=" in url
        query = parse_qs(urlsplit(url).query)
        assert query["response-content-disposition"] == [f"attachment; filename={sample['id']}_R1.fastq.gz"]
        with urllib.request.urlopen(url, timeout=10) as r:
            whole = r.read()
        assert len(whole) == r1["size"] and hashlib.sha256(whole).hexdigest() == r1["checksum_sha256"]
        request = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 206 and r.read() == whole[10:20]


def test_s3_events_mode_learns_uploads_from_notifications_not_heads(sandbox: SandboxProcess) -> None:
    """`--s3-events`: an object written straight to the S3 server (past the sandbox's proxy) is not looked for
    with HeadObject; the upload turns `succeeded` when the S3 server's event notification arrives."""
    upstream = sandbox.info.s3_upstream_url
    args = ("--s3-endpoint", upstream, "--bucket", "ev-uploads", "--deliverables-bucket", "ev-deliverables")
    with SandboxProcess(*args, "--s3-events", "--upload-poll-interval", "0") as proc:
        path = "gncv://events/E1_R1.fastq.gz"
        up = proc.control.api("POST", "/api/v2/uploads-post-data/", {"destination_path": path}, expect=[201])
        bucket, key = up["s3"]["bucket"], up["s3"]["object_name"]
        direct = botocore.session.get_session().create_client(
            "s3", endpoint_url=upstream, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
        )
        direct.put_object(Bucket=bucket, Key=key, Body=b"x" * 100)  # straight to S3, past the proxy

        def status() -> str:
            again = proc.control.api("POST", "/api/v2/uploads-post-data/", {"destination_path": path}, expect=[201])
            return str(again["last_status"]["status"])

        assert status() == "started"  # the object exists, but nobody told the sandbox
        event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket},
                                                                      "object": {"key": key, "size": 100}}}]}
        request = urllib.request.Request(proc.info.api_url + "/_s3-events", data=json.dumps(event).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200
        assert status() == "succeeded"
