"""The S3 multipart backend: one long-lived aiobotocore client on Gencove's refreshable upload credentials.

* Credentials come from `upload-credentials` and are refreshed by botocore before they expire, also in the
  middle of a long multipart upload. botocore's refresh windows (15 min advisory, 10 min mandatory) are
  scaled down for short lifetimes, or every request would refresh (tech-notes §3.5). An `ExpiredToken`
  answer forces a refresh before the retry.
* Every call runs under `transferd.retry` (deadline-bound, the only retry layer: botocore makes one attempt);
  what is not retryable raises at once and the engine fails that object.
* Part bodies arrive already checksummed (CRC32 or Content-MD5, computed in a reader thread), so botocore
  neither hashes nor signs large payloads on the event loop; S3 verifies the checksum. botocore adds no checksum
  of its own (`request_checksum_calculation = when_required`): every one is ours.
* A single PUT (with checksums on) is sent aws-chunked with its SHA-256 as a trailer (`putbody.SourcesBody`),
  computed in the same pass that reads the sources; S3 verifies it and keeps it as the object's checksum, which
  `head_object` asks for (`ChecksumMode`) to recognise a PUT that landed while its answer was lost.
"""

from __future__ import annotations

import base64
import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioRefreshableCredentials
from aiobotocore.session import get_session
from botocore.credentials import CredentialProvider
from botocore.exceptions import ClientError

from transferd.config import GencoveConfig, UploadConfig
from transferd.discovery.models import SourceFile
from transferd.gencove.client import GencoveClient
from transferd.gencove.models import Credentials
from transferd.journal.uploads import PartRow
from transferd.log import event, register_secret
from transferd.network import DIRECT, Network
from transferd.retry import Policy, call, is_credential_error
from transferd.upload.budget import ByteBudget
from transferd.upload.putbody import SourcesBody
from transferd.upload.stream import PartData

log = logging.getLogger(__name__)

ADVISORY_WINDOW = 15 * 60.0  # botocore's defaults, for long-lived credentials
MANDATORY_WINDOW = 10 * 60.0
FORCED_REFRESH_DEBOUNCE = 1.0  # parts in flight together see the same ExpiredToken; one refresh serves them all


class MultipartGone(Exception):
    """S3 no longer knows the multipart upload (aborted or expired): the object starts again."""


class TrailersRefused(Exception):
    """The server refused an aws-chunked body (501 NotImplemented): single PUTs now send their checksum up front,
    and the object starts again."""


SHA256_META = "transferd-sha256"  # user metadata of objects sent by one PutObject: SHA-256 of the sources
SHA256_TRAILER = "x-amz-checksum-sha256"


@dataclass(frozen=True, slots=True)
class Head:
    size: int
    etag: str  # without quotes
    sha256: str | None  # hex: S3's SHA-256 checksum of the object, or our SHA256_META (single PUTs only)


@dataclass(frozen=True, slots=True)
class Stored:
    """S3's answer to a PutObject or CompleteMultipartUpload: the ETag, and whether the answer named the checksum
    we declared, i.e. S3 verified every byte against it (then no HeadObject is needed to trust the object)."""

    etag: str  # without quotes
    verified: bool


@dataclass(frozen=True, slots=True)
class RemotePart:
    number: int
    size: int
    etag: str  # without quotes


def refresh_windows(lifetime: float) -> tuple[float, float]:
    """(advisory, mandatory) seconds before expiry, scaled to the credentials' lifetime."""
    lifetime = max(lifetime, 0.0)
    return min(ADVISORY_WINDOW, lifetime / 2), min(MANDATORY_WINDOW, lifetime / 4)


def composite_crc32(parts: list[str | None]) -> str:
    """S3's checksum of a multipart object from its parts' base64 CRC32s: the CRC32 of the concatenated part
    digests, base64, with `-<part count>` appended."""
    crc = 0
    for value in parts:
        crc = zlib.crc32(base64.b64decode(value or ""), crc)
    return f"{base64.b64encode(crc.to_bytes(4, 'big')).decode()}-{len(parts)}"


def _b64(sha256_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def _sign_trailer(request: Any, **_: Any) -> None:
    """before-sign of PutObject: a body with a checksum trailer is announced as aws-chunked, and the signer then
    signs STREAMING-UNSIGNED-PAYLOAD-TRAILER (botocore's own trailer would read the body on the event loop)."""
    body = request.data if hasattr(request, "data") else None
    if not isinstance(body, SourcesBody) or body.trailer is None:
        return
    request.context.setdefault("checksum", {})["request_algorithm"] = {
        "in": "trailer", "algorithm": "sha256", "name": body.trailer,
    }  # fmt: skip
    request.headers["Content-Encoding"] = "aws-chunked"
    request.headers["X-Amz-Trailer"] = body.trailer
    request.headers["X-Amz-Decoded-Content-Length"] = str(body.size)
    request.headers["X-Amz-Sdk-Checksum-Algorithm"] = "SHA256"


def _status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unquote(etag: str) -> str:
    return etag.strip('"')


class PartStream:
    """A part body that aiohttp sends straight from the part's buffer (`bytes` or a read-only view) in 1 MiB
    slices.

    Given `bytes`, aiohttp writes them to the socket transport in one call, and asyncio copies whatever the
    socket did not take at once into the transport's buffer: a second copy of every part in flight. Sent as
    an async iterable of memoryview slices, a part exists once in memory. `read`/`seek`/`tell` are there for
    botocore (which validates and rewinds bodies); nothing hashes the body here, its checksum is already set.
    """

    SLICE = 1024**2

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = data
        self._pos = 0
        self._closed = False

    def close(self) -> None:
        """No slice is handed out after this (the part's buffer is about to be reused)."""
        self._closed = True

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n is None or n < 0 else min(len(self._data), self._pos + n)
        out = self._data[self._pos : end]
        self._pos = end
        return out if isinstance(out, bytes) else bytes(out)

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = max(0, min(len(self._data), base + pos))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __aiter__(self) -> AsyncIterator[memoryview]:
        return self._slices()

    async def _slices(self) -> AsyncIterator[memoryview]:
        view = memoryview(self._data)
        while self._pos < len(self._data) and not self._closed:
            start = self._pos
            self._pos = min(len(self._data), start + self.SLICE)
            yield view[start : self._pos]


class GencoveCredentials(AioRefreshableCredentials):
    """Refreshable credentials whose refresh windows follow each credential set's lifetime."""

    def scale_windows(self, expiry: datetime) -> None:
        lifetime = (expiry - datetime.now(UTC)).total_seconds()
        self._advisory_refresh_timeout, self._mandatory_refresh_timeout = refresh_windows(lifetime)

    async def force_refresh(self) -> None:
        async with self._refresh_lock:
            await self._protected_refresh(is_mandatory=True)


class _Provider(CredentialProvider):
    METHOD = "gencove-upload"
    CANONICAL_NAME = "custom-gencove-upload"

    def __init__(self, creds: GencoveCredentials) -> None:
        self._creds = creds

    async def load(self) -> GencoveCredentials:  # type: ignore[override]
        return self._creds


class S3Backend:
    """Use as `async with S3Backend(...) as s3:`; the client lives as long as the block."""

    def __init__(
        self,
        gencove: GencoveConfig,
        upload: UploadConfig,
        api: GencoveClient,
        policy: Policy,
        network: Network = DIRECT,
    ) -> None:
        self._gencove = gencove
        self._network = network
        self._upload = upload
        self._api = api
        self.policy = policy
        self.checksums = gencove.s3_checksums == "when_supported"
        # Single PUTs carry their SHA-256 as an aws-chunked trailer; off for good once the server has shown it
        # stores the framing instead of decoding it (an S3-compatible server that knows no aws-chunked).
        self.trailers = self.checksums
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._creds: GencoveCredentials | None = None
        self._refreshed_at = 0.0
        self.refreshes = 0

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def __aenter__(self) -> S3Backend:
        first = await self._api.upload_credentials()
        creds = GencoveCredentials.create_from_metadata(
            first.metadata(), refresh_using=self._fetch, method=_Provider.METHOD
        )
        assert isinstance(creds, GencoveCredentials)
        creds.scale_windows(first.expiry)
        self._creds = creds
        session = get_session()
        session.get_component("credential_provider").insert_before("env", _Provider(creds))
        endpoint = self._gencove.s3_endpoint_url or None
        s3_options: dict[str, Any] = {
            # Our own CRC32 / Content-MD5 protects every body; never SHA-256 a part on the event loop.
            "payload_signing_enabled": False,
        }
        if endpoint:
            s3_options["addressing_style"] = "path"
        network = self._network
        config = AioConfig(
            **network.botocore_options(self._gencove.s3_endpoint_url),
            region_name=self._gencove.s3_region,
            max_pool_connections=max(10, self._upload.concurrency + 4),
            # One attempt per call: `transferd.retry` is the one retry policy. botocore's own retries would
            # also re-send a PUT whose answer was lost after S3 stored it; ours asks S3 first (see `put`).
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=self._gencove.request_timeout,
            s3=s3_options,
            request_checksum_calculation="when_required",  # our checksums only (see the module docstring)
            response_checksum_validation=self._gencove.s3_checksums,
            warm_up_loader_caches=True,  # the first create_client loads JSON models: off the loop
        )
        try:
            self._client = await self._stack.enter_async_context(
                session.create_client("s3", endpoint_url=endpoint, config=config, verify=network.botocore_verify())
            )
        except BaseException:
            await self._stack.aclose()
            raise
        self._client.meta.events.register("before-sign.s3.PutObject", _sign_trailer)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        self._client = None

    # -- credentials ----------------------------------------------------------------------------------------
    async def _fetch(self) -> dict[str, str]:
        creds: Credentials = await self._api.upload_credentials()
        register_secret(creds.secret_key)
        register_secret(creds.token)
        if self._creds is not None:
            self._creds.scale_windows(creds.expiry)
        self._refreshed_at = time.monotonic()
        self.refreshes += 1
        event(log, "upload.credentials_refreshed", expires=creds.expiry.isoformat())
        return creds.metadata()

    async def force_refresh(self) -> None:
        if self._creds is None or time.monotonic() - self._refreshed_at < FORCED_REFRESH_DEBOUNCE:
            return
        await self._creds.force_refresh()

    async def _on_retry(self, exc: BaseException) -> None:
        if is_credential_error(exc):
            await self.force_refresh()

    async def _call(self, operation: str, fn: Any) -> Any:
        return await call(f"s3.{operation}", fn, self.policy, self._on_retry)

    # -- operations -----------------------------------------------------------------------------------------
    async def create(self, bucket: str, key: str) -> str:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if self.checksums:
            kwargs["ChecksumAlgorithm"] = "CRC32"
        resp = await self._call("create_multipart_upload", lambda: self._client.create_multipart_upload(**kwargs))
        return str(resp["UploadId"])

    async def upload_part(self, bucket: str, key: str, upload_id: str, part: PartData) -> PartRow:
        kwargs: dict[str, Any] = {
            "Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": part.spec.number,
            "ContentLength": part.spec.size,
        }  # fmt: skip
        if self.checksums and part.crc32:
            kwargs["ChecksumCRC32"] = part.crc32
        elif part.md5:
            kwargs["ContentMD5"] = base64.b64encode(bytes.fromhex(part.md5)).decode()

        async def once() -> Any:
            body = PartStream(part.body)  # a fresh stream per attempt (a sent stream is spent)
            try:
                return await self._client.upload_part(Body=body, **kwargs)
            except ClientError as e:
                if _error_code(e) == "NoSuchUpload":
                    raise MultipartGone(f"s3://{bucket}/{key}: multipart upload {upload_id} is gone") from e
                raise
            finally:
                body.close()

        resp = await self._call("upload_part", once)
        checksum = resp.get("ChecksumCRC32") or (part.crc32 if self.checksums else None)
        return PartRow(part.spec.number, part.spec.offset, part.spec.size, _unquote(resp["ETag"]), checksum)

    def body(self, sources: Sequence[SourceFile], budget: ByteBudget, on_sent: Callable[[int], None]) -> SourcesBody:
        """The body of a single PUT: aws-chunked with a SHA-256 trailer when checksums are on."""
        return SourcesBody(sources, budget, on_sent, trailer=SHA256_TRAILER if self.trailers else None)

    async def put(self, bucket: str, key: str, body: SourcesBody, sha256: str | None = None) -> Stored:
        """One PutObject of `body` (streamed). With checksums on, the body carries its SHA-256 as a trailer,
        computed while it is read (`body.sha256` afterwards), which S3 verifies and keeps; without, `sha256` (known
        before, from a first pass) goes as metadata (see `head_object`). The SHA-256 is computed anyway (end to
        end), so it costs nothing more. A source that changed under the body raises `SourceChanged` at once
        (never retried: the engine starts the object again)."""
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "ContentLength": len(body)}
        if body.trailer is None and sha256 is not None and self.checksums:
            kwargs["ChecksumSHA256"] = _b64(sha256)
        if body.trailer is None:
            if sha256 is None:
                raise ValueError("a PUT without a checksum trailer needs the SHA-256 beforehand")
            kwargs["Metadata"] = {SHA256_META: sha256}

        tries = 0

        async def once() -> Any:
            nonlocal tries
            tries += 1
            sent_sha256 = sha256 or body.sha256  # None: no earlier try sent every byte, so none can have landed
            if tries > 1 and sent_sha256 is not None:  # it may have landed with its answer lost: never store twice
                found = await self._head_once(bucket, key)
                if found is not None and found.size == body.size and found.sha256 == sent_sha256:
                    return {"ETag": found.etag, "ChecksumSHA256": _b64(found.sha256)}
            body.seek(0)
            try:
                return await self._client.put_object(Body=body, **kwargs)
            except ClientError as e:
                if body.trailer is not None and (_error_code(e) == "NotImplemented" or _status(e) == 501):
                    if self.trailers:  # said once, by the first PUT that finds out
                        event(log, "upload.s3_no_aws_chunked", logging.WARNING, object=f"s3://{bucket}/{key}",
                              error=_error_code(e), hint="the S3 server refuses aws-chunked bodies; single PUTs "
                              "now hash their sources first (set s3_checksums = \"when_required\" for such "
                              "servers)")  # fmt: skip
                    self.trailers = False
                    raise TrailersRefused(f"s3://{bucket}/{key}: the S3 server refused an aws-chunked body") from e
                if body.failed is not None:
                    raise body.failed from None
                raise
            except Exception:
                if body.failed is not None:
                    raise body.failed from None
                raise
            finally:
                body.close()

        resp = await self._call("put_object", once)
        sent = body.sha256 if self.checksums else None
        verified = sent is not None and resp.get("ChecksumSHA256") == _b64(sent)
        return Stored(_unquote(str(resp.get("ETag", ""))), verified)

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> dict[int, RemotePart]:
        async def once() -> dict[int, RemotePart]:
            found: dict[int, RemotePart] = {}
            paginator = self._client.get_paginator("list_parts")
            try:
                async for page in paginator.paginate(Bucket=bucket, Key=key, UploadId=upload_id):
                    for p in page.get("Parts", []):
                        n = int(p["PartNumber"])
                        found[n] = RemotePart(n, int(p["Size"]), _unquote(p["ETag"]))
            except ClientError as e:
                if _error_code(e) == "NoSuchUpload":
                    raise MultipartGone(f"s3://{bucket}/{key}: multipart upload {upload_id} is gone") from e
                raise
            return found

        return await self._call("list_parts", once)  # type: ignore[no-any-return]

    async def complete(self, bucket: str, key: str, upload_id: str, parts: list[PartRow]) -> Stored:
        """Verified when S3's answer names the composite CRC32 of exactly the parts listed (each of which S3
        verified when it was sent)."""
        listed = []
        for p in sorted(parts, key=lambda p: p.number):
            item: dict[str, Any] = {"PartNumber": p.number, "ETag": f'"{p.etag}"'}
            if self.checksums and p.checksum:
                item["ChecksumCRC32"] = p.checksum
            listed.append(item)

        async def once() -> Any:
            try:
                return await self._client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
                )
            except ClientError as e:
                if _error_code(e) == "NoSuchUpload":
                    raise MultipartGone(f"s3://{bucket}/{key}: multipart upload {upload_id} is gone") from e
                raise

        resp = await self._call("complete_multipart_upload", once)
        checksums = [p.checksum for p in sorted(parts, key=lambda p: p.number)]
        verified = self.checksums and all(checksums) and resp.get("ChecksumCRC32") == composite_crc32(checksums)
        return Stored(_unquote(str(resp.get("ETag", ""))), verified)

    async def abort(self, bucket: str, key: str, upload_id: str) -> None:
        """Best effort: a stray multipart upload costs storage, not correctness."""

        async def once() -> None:
            try:
                await self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except ClientError as e:
                if _error_code(e) not in ("NoSuchUpload", "404"):
                    raise

        try:
            await self._call("abort_multipart_upload", once)
        except Exception as e:  # logged; the object starts over regardless
            event(log, "upload.abort_failed", logging.WARNING, object=f"s3://{bucket}/{key}", error=str(e))

    async def head(self, bucket: str, key: str) -> tuple[int, str] | None:
        """(size, etag) of the object, or None when it is not there."""
        found = await self.head_object(bucket, key)
        return None if found is None else (found.size, found.etag)

    async def _head_once(self, bucket: str, key: str) -> Head | None:
        try:
            resp = await self._client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as e:
            if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        checksum = resp.get("ChecksumSHA256")
        sha256 = (resp.get("Metadata") or {}).get(SHA256_META) or (
            base64.b64decode(checksum).hex() if checksum and "-" not in checksum else None
        )
        return Head(int(resp["ContentLength"]), _unquote(str(resp.get("ETag", ""))), sha256)

    async def head_object(self, bucket: str, key: str) -> Head | None:
        def once() -> Any:
            return self._head_once(bucket, key)

        try:
            return await self._call("head_object", once)  # type: ignore[no-any-return]
        except ClientError as e:
            # A HEAD answer has no body, so an expired token shows up as a bare 400 (or 403): refresh the
            # credentials once and ask again; if that fails too, the error is real.
            if _error_code(e) not in ("400", "403") or self._creds is None:
                raise
            await self._creds.force_refresh()
            return await self._call("head_object", once)  # type: ignore[no-any-return]
