"""`--tls`: the sandbox serves its API and S3 proxy over HTTPS with a CA made at start, and a client trusts it only
through that CA file. Over HTTPS botocore sends its own checksum as an aws-chunked trailer, which the proxy checks
as S3 does."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import botocore.config
import botocore.session
import pytest
from botocore.exceptions import ClientError

from transferd.sandbox import SandboxProcess

BODY = bytes(range(256)) * 8192  # 2 MiB


@pytest.fixture(scope="module")
def tls_sandbox() -> Iterator[SandboxProcess]:
    with SandboxProcess("--tls", "--sample-delay", "0.5") as sb:
        yield sb


def _s3(sb: SandboxProcess, **config: Any) -> Any:
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=sb.info.s3_url, region_name="us-east-1", verify=sb.info.ca_file,
        aws_access_key_id="test", aws_secret_access_key="test",
        config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, **config),
    )  # fmt: skip


def test_api_and_s3_are_https_trusted_only_through_the_ca_file(tls_sandbox: SandboxProcess) -> None:
    info = tls_sandbox.info
    assert info.api_url.startswith("https://") and info.s3_url.startswith("https://") and info.ca_file
    assert tls_sandbox.control.api("GET", "/api/v2/projects/")["results"]  # the control client uses the CA
    with pytest.raises(urllib.error.URLError) as exc:  # the system trust store does not know the sandbox's CA
        urllib.request.urlopen(info.api_url + "/api/v2/projects/", timeout=10)
    assert isinstance(exc.value.reason, ssl.SSLCertVerificationError)
    trusted = ssl.create_default_context(cafile=info.ca_file)
    req = urllib.request.Request(
        info.api_url + "/api/v2/projects/", headers={"Authorization": f"Api-Key {info.api_key}"}
    )
    with urllib.request.urlopen(req, timeout=10, context=trusted) as answer:
        assert answer.status == 200


def test_botocores_trailer_checksum_over_https_is_verified(tls_sandbox: SandboxProcess) -> None:
    s3, bucket = _s3(tls_sandbox, request_checksum_calculation="when_supported"), tls_sandbox.info.bucket
    tls_sandbox.control.clear_log()
    s3.put_object(Bucket=bucket, Key="tls/ok", Body=BODY, ChecksumAlgorithm="CRC32C")
    assert s3.get_object(Bucket=bucket, Key="tls/ok")["Body"].read() == BODY
    tls_sandbox.control.add_fault(target="s3", operation="PutObject", corrupt=True, times=1)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="tls/bad", Body=BODY, ChecksumAlgorithm="CRC32C")
    assert exc.value.response["Error"]["Code"] == "BadDigest"
    puts = [(e["key"], e["status"], e["fault"]) for e in tls_sandbox.control.log(target="s3")
            if e["operation"] == "PutObject"]  # fmt: skip
    assert puts == [("tls/ok", 200, None), ("tls/bad", 400, "corrupt, refused: BadDigest")]
