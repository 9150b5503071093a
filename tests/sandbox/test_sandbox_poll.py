"""With the background poller off (benchmarks), an upload written behind the proxy's back still turns
`succeeded` as soon as the API is asked about it."""

from __future__ import annotations

from helpers import s3_client

from transferd.sandbox import SandboxProcess

V2 = "/api/v2"


async def test_poll_off_refreshes_on_demand() -> None:
    with SandboxProcess("--upload-poll-interval", "0") as sb:
        c = sb.control
        slot = c.api("POST", f"{V2}/uploads-post-data/", {"destination_path": "gncv://p/S1_R1.fastq.gz"}, expect=[201])
        assert slot["last_status"]["status"] == "started"
        # Straight to the S3 server, so the proxy cannot notice the write.
        async with s3_client(sb.info.s3_upstream_url, "k", "s") as s3:
            await s3.put_object(Bucket=slot["s3"]["bucket"], Key=slot["s3"]["object_name"], Body=b"x" * 10)
        again = c.api("POST", f"{V2}/uploads-post-data/", {"destination_path": "gncv://p/S1_R1.fastq.gz"}, expect=[201])
        assert again["id"] == slot["id"]
        assert again["last_status"]["status"] == "succeeded"
