"""The sandbox's own S3 access (bucket set-up, existence checks, deliverables, download streaming).

It talks to the S3 server directly, not through the fault proxy, so its traffic is neither logged
nor faulted. Bodies are always streamed in chunks, never read whole.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

CHUNK = 256 * 1024
PART = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ObjectSlice:
    """An open GetObject body plus what the caller needs for its response headers."""

    body: Any  # aiobotocore StreamingBody
    length: int
    etag: str


class S3Store:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        self._endpoint = endpoint
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def __aenter__(self) -> S3Store:
        config = Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=32,
            connect_timeout=5,
            read_timeout=120,
        )
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self._endpoint,
                region_name=self._region,
                aws_access_key_id=self._access_key,
                aws_secret_access_key=self._secret_key,
                config=config,
            )
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def ensure_bucket(self, bucket: str) -> None:
        try:
            await self._client.head_bucket(Bucket=bucket)
        except ClientError:
            await self._client.create_bucket(Bucket=bucket)

    async def exists(self, bucket: str, key: str) -> bool:
        try:
            await self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def copy(self, src_bucket: str, src_key: str, bucket: str, key: str) -> None:
        await self._client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": src_bucket, "Key": src_key})

    async def put(self, bucket: str, key: str, data: bytes) -> None:
        await self._client.put_object(Bucket=bucket, Key=key, Body=data)

    async def put_generated(self, bucket: str, key: str, size: int, seed: int) -> None:
        """Write `size` deterministic pseudo-random bytes, in 8 MiB parts so memory stays flat."""
        rng = random.Random(seed)
        if size <= PART:
            await self.put(bucket, key, rng.randbytes(size))
            return
        created = await self._client.create_multipart_upload(Bucket=bucket, Key=key)
        upload_id = created["UploadId"]
        parts = []
        try:
            offset, number = 0, 1
            while offset < size:
                chunk = rng.randbytes(min(PART, size - offset))
                done = await self._client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"PartNumber": number, "ETag": done["ETag"]})
                offset += len(chunk)
                number += 1
            await self._client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            await self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    async def sha256(self, bucket: str, key: str) -> tuple[str, int]:
        """(hex sha256, size) of an object, hashed chunk by chunk as it streams in."""
        digest = hashlib.sha256()
        size = 0
        response = await self._client.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            async for chunk in body.iter_chunks(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return digest.hexdigest(), size

    @asynccontextmanager
    async def open(
        self, bucket: str, key: str, first: int | None = None, last: int | None = None
    ) -> AsyncIterator[ObjectSlice]:
        """Open an object (or the inclusive byte range first..last) for streaming."""
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if first is not None and last is not None:
            kwargs["Range"] = f"bytes={first}-{last}"
        response = await self._client.get_object(**kwargs)
        async with response["Body"] as body:
            yield ObjectSlice(body=body, length=int(response["ContentLength"]), etag=response.get("ETag", ""))
