"""The benchmark's own S3 housekeeping (never timed): buckets, listing what landed, deleting it between reps.

Plain synchronous botocore (already in transferd's venv), path-style, no payload checksums.
"""

from __future__ import annotations

from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.session import get_session


class S3Admin:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        self.endpoint = endpoint
        self._client: Any = get_session().create_client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"mode": "standard", "max_attempts": 3},
            ),
        )

    def ensure_bucket(self, bucket: str) -> None:
        try:
            self._client.head_bucket(Bucket=bucket)
        except ClientError:
            self._client.create_bucket(Bucket=bucket)

    def listing(self, bucket: str, prefix: str = "") -> dict[str, tuple[int, str]]:
        """key -> (size, ETag without quotes) of every object under `prefix`."""
        out: dict[str, tuple[int, str]] = {}
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                out[item["Key"]] = (int(item["Size"]), str(item.get("ETag", "")).strip('"'))
        return out

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """key -> size of every object under `prefix`."""
        return {key: size for key, (size, _) in self.listing(bucket, prefix).items()}

    def total_bytes(self, bucket: str, prefix: str = "") -> int:
        return sum(self.objects(bucket, prefix).values())

    def delete_all(self, bucket: str, prefix: str = "") -> int:
        """Delete every object (and abort every multipart upload) under `prefix`; return how many objects."""
        keys = list(self.objects(bucket, prefix))
        for key in keys:
            self._client.delete_object(Bucket=bucket, Key=key)
        try:
            uploads = self._client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
        except ClientError:
            uploads = []  # not every S3 double lists multipart uploads
        for upload in uploads:
            self._client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        return len(keys)

    def close(self) -> None:
        self._client.close()
