"""The sandbox's S3 proxy verifies request bodies as S3 does (neither moto nor s3rver does): a body that does not
match its `Content-MD5` or `x-amz-checksum-*` (header or aws-chunked trailer) is refused with S3's error and is
never stored; a CompleteMultipartUpload naming a part checksum the part was not sent with is refused."""

from __future__ import annotations

import base64
import hashlib
import io
import zlib
from typing import Any

import botocore.config
import botocore.session
import pytest
from botocore.exceptions import ClientError

from transferd.sandbox import SandboxProcess
from transferd.sandbox.checksums import BodyCheck, Refusal

BODY = bytes(range(256)) * 4096  # 1 MiB


def _client(sb: SandboxProcess, **config: Any) -> Any:
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=sb.info.s3_url, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, **config),
    )  # fmt: skip


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _refused(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    err = exc.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"], err["Error"]["Message"]


def _absent(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        return e.response["Error"]["Code"] in ("404", "NoSuchKey")
    return False


def test_bodies_matching_their_checksums_are_stored(sandbox: SandboxProcess) -> None:
    s3, bucket = _client(sandbox), sandbox.info.bucket
    good = {
        "ChecksumSHA256": _b64(hashlib.sha256(BODY).digest()),
        "ChecksumCRC32": _b64(zlib.crc32(BODY).to_bytes(4, "big")),
        "ContentMD5": _b64(hashlib.md5(BODY).digest()),
    }
    for n, (name, value) in enumerate(good.items()):
        answer = s3.put_object(Bucket=bucket, Key=f"ok/{n}", Body=BODY, **{name: value})
        if name != "ContentMD5":
            assert answer[name] == value  # S3 names the checksum it verified
    for algorithm in ("CRC32C", "CRC64NVME", "SHA1"):  # computed by botocore (with awscrt), verified by the proxy
        s3.put_object(Bucket=bucket, Key=f"ok/{algorithm}", Body=BODY, ChecksumAlgorithm=algorithm)
    for key in [f"ok/{n}" for n in range(len(good))] + ["ok/CRC32C", "ok/CRC64NVME", "ok/SHA1"]:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == BODY
    assert all(e["status"] == 200 for e in sandbox.control.log(target="s3") if e["operation"] == "PutObject")


def test_a_body_that_differs_from_its_checksum_is_refused_as_s3_does_and_not_stored(sandbox: SandboxProcess) -> None:
    s3, bucket = _client(sandbox), sandbox.info.bucket
    other = b"x" + BODY[1:]
    cases = {
        "sha256": ({"ChecksumSHA256": _b64(hashlib.sha256(other).digest())}, "BadDigest",
                   "The SHA256 you specified did not match the calculated checksum."),
        "crc32": ({"ChecksumCRC32": _b64(zlib.crc32(other).to_bytes(4, "big"))}, "BadDigest",
                  "The CRC32 you specified did not match the calculated checksum."),
        "crc64nvme": ({"ChecksumCRC64NVME": _b64(bytes(8))}, "BadDigest",
                      "The CRC64NVME you specified did not match the calculated checksum."),
        "md5": ({"ContentMD5": _b64(hashlib.md5(other).digest())}, "BadDigest",
                "The Content-MD5 you specified did not match what we received."),
        "bad-md5": ({"ContentMD5": "not base64!"}, "InvalidDigest", "The Content-MD5 you specified was invalid."),
        "bad-value": ({"ChecksumSHA256": _b64(b"short")}, "InvalidRequest",
                      "Value for x-amz-checksum-sha256 header is invalid."),
    }  # fmt: skip
    for key, (kwargs, code, message) in cases.items():
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key=key, Body=BODY, **kwargs)
        assert _refused(exc) == (400, code, message), key
        assert _absent(s3, bucket, key), f"{key}: a refused body was stored"
    refused = {e["key"]: e["fault"] for e in sandbox.control.log(target="s3") if e["operation"] == "PutObject"}
    assert refused == {key: f"refused: {code}" for key, (_, code, _) in cases.items()}  # by the proxy, not moto


def test_a_checksum_trailer_of_an_aws_chunked_body_is_verified() -> None:
    payload = b"hello world, " * 1000
    crc = _b64(zlib.crc32(payload).to_bytes(4, "big"))
    headers = {"Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
               "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}  # fmt: skip

    def framed(trailer_value: str, cut: int = 5000) -> bytes:
        chunks = [payload[:cut], payload[cut:]]
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        return body + f"0\r\nx-amz-checksum-crc32:{trailer_value}\r\n\r\n".encode()

    for split in (1, 7, 4096, 65536):  # the framing arrives cut anywhere
        check = BodyCheck.of(headers)
        assert isinstance(check, BodyCheck)
        raw = framed(crc)
        for i in range(0, len(raw), split):
            check.feed(raw[i : i + split])
        assert check.finish() is None and check.payload_bytes == len(payload)
    check = BodyCheck.of(headers)
    assert isinstance(check, BodyCheck)
    check.feed(framed(_b64(bytes(4))))
    assert check.finish() == Refusal("BadDigest", "The CRC32 you specified did not match the calculated checksum.")
    truncated = BodyCheck.of(headers)
    assert isinstance(truncated, BodyCheck)
    truncated.feed(framed(crc)[:-30])
    refusal = truncated.finish()
    assert refusal is not None and refusal.code == "IncompleteBody"
    assert BodyCheck.of({"x-amz-checksum-crc32": crc, "x-amz-checksum-sha256": crc}) == Refusal(
        "InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
    )


def test_botocores_own_streamed_checksum_passes(sandbox: SandboxProcess) -> None:
    """botocore's default (`when_supported`) checksum of a streamed body is accepted, whatever form it takes."""
    s3, bucket = _client(sandbox, request_checksum_calculation="when_supported"), sandbox.info.bucket

    s3.put_object(Bucket=bucket, Key="streamed", Body=io.BytesIO(BODY))
    assert s3.get_object(Bucket=bucket, Key="streamed")["Body"].read() == BODY


def test_complete_naming_a_part_checksum_the_part_was_not_sent_with_is_refused(sandbox: SandboxProcess) -> None:
    s3, bucket, key = _client(sandbox), sandbox.info.bucket, "mp"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32")["UploadId"]
    part = BODY * 5
    crc = _b64(zlib.crc32(part).to_bytes(4, "big"))
    etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=part, ChecksumCRC32=crc)[
        "ETag"
    ]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": etag, "ChecksumCRC32": _b64(bytes(4))}]})  # fmt: skip
    assert _refused(exc)[:2] == (400, "InvalidPart")
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etag, "ChecksumCRC32": crc}]})  # fmt: skip
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == part
    # as S3 does, the answer names the composite checksum: CRC32 of the part digests, "-<parts>"
    assert done["ChecksumCRC32"] == _b64(zlib.crc32(base64.b64decode(crc)).to_bytes(4, "big")) + "-1"
