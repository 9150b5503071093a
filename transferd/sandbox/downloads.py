"""Signed, expiring download URLs for deliverables, and the route that serves them.

`GET|HEAD /_dl/<file_id>?expires=<unix>&sig=<hmac>&response-content-disposition=attachment%3B%20filename%3D<name>`
checks the HMAC and the expiry (403 AccessDenied otherwise), honours a single `Range` (206 +
Content-Range; 416 when unsatisfiable) and streams the object from S3 chunk by chunk. Download faults
(corrupt bytes, reset mid-body, an endless body, latency, status) are applied here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web
from botocore.exceptions import ClientError

from transferd.sandbox.faults import Effect
from transferd.sandbox.reqlog import Stopwatch, peer_of
from transferd.sandbox.s3proxy import error_response
from transferd.sandbox.state import NotFound, SampleFile

if TYPE_CHECKING:
    from transferd.sandbox.runtime import Sandbox

CHUNK = 256 * 1024
ENDLESS_CAP = 1024**3  # an "endless" body still ends here, so a client that never stops cannot hang a test
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class UrlSigner:
    def __init__(self, base_url: str, secret: bytes | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._secret = secret or secrets.token_bytes(32)

    def _mac(self, file_id: str, expires: str, disposition: str) -> str:
        message = f"{file_id}\n{expires}\n{disposition}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, sample_file: SampleFile, ttl: float, now: float | None = None) -> str:
        expires = str(int((time.time() if now is None else now) + ttl))
        disposition = f"attachment; filename={sample_file.filename}"
        sig = self._mac(sample_file.id, expires, disposition)
        return (
            f"{self._base}/_dl/{sample_file.id}?expires={expires}&sig={sig}"
            f"&response-content-disposition={quote(disposition, safe='')}"
        )

    def check(self, file_id: str, expires: str, disposition: str, sig: str, now: float | None = None) -> str | None:
        """None when the URL is good, else the reason it is refused."""
        if not hmac.compare_digest(self._mac(file_id, expires, disposition), sig):
            return "The request signature we calculated does not match the signature you provided."
        if not expires.isdigit() or (time.time() if now is None else now) > int(expires):
            return "Request has expired"
        return None


class PresignedUrls:
    """Download URLs presigned (SigV4, query string) on the S3 server itself, as the real service's are: the
    client talks to S3 directly. Signing is local computation (a plain botocore client, no request)."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str) -> None:
        import botocore.session
        from botocore.config import Config

        self._client = botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access_key,
            aws_secret_access_key=secret_key, config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )  # fmt: skip

    def sign(self, sample_file: SampleFile, ttl: float, now: float | None = None) -> str:
        params = {
            "Bucket": sample_file.bucket, "Key": sample_file.key,
            "ResponseContentDisposition": f"attachment; filename={sample_file.filename}",
        }  # fmt: skip
        url: str = self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=max(1, int(ttl)))
        return url

    def check(self, file_id: str, expires: str, disposition: str, sig: str, now: float | None = None) -> str | None:
        return "this sandbox hands out S3 URLs (--direct-download-urls); /_dl URLs are not valid here"


@dataclass(frozen=True, slots=True)
class ByteRange:
    first: int
    last: int  # inclusive

    @property
    def length(self) -> int:
        return self.last - self.first + 1


def parse_range(header: str | None, size: int) -> ByteRange | str | None:
    """A ByteRange, None for "whole object", or "unsatisfiable"."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None  # malformed or multi-range: S3 ignores it and sends everything
    first_text, last_text = match.groups()
    if not first_text:  # suffix range: the last N bytes
        count = int(last_text)
        if count == 0 or size == 0:
            return "unsatisfiable"
        return ByteRange(max(0, size - count), size - 1)
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size or last < first:
        return "unsatisfiable"
    return ByteRange(first, min(last, size - 1))


async def serve_download(request: web.Request, hub: Sandbox) -> web.StreamResponse:
    watch = Stopwatch()
    file_id = request.match_info["file_id"]
    query = {k: v for k, v in request.query.items()}
    range_header = request.headers.get("Range")
    sent = 0
    status = 0
    fault: str | None = None
    file_type: str | None = None
    try:
        reason = hub.signer.check(
            file_id, query.get("expires", ""), query.get("response-content-disposition", ""), query.get("sig", "")
        )
        if reason is not None:
            status = 403
            return error_response(403, "AccessDenied", reason, request.path)
        try:
            sample, sample_file = hub.state.file(file_id)
        except NotFound:
            status = 404
            return error_response(404, "NoSuchKey", "The specified key does not exist.", request.path)
        file_type = sample_file.file_type
        if not sample.downloadable:
            status = 403
            return error_response(
                403, "InvalidObjectState", "The operation is not valid for the object's storage class", request.path
            )
        effect = hub.faults.take_download(file_id, sample_file.file_type)
        fault = effect.description
        if effect.latency:
            await asyncio.sleep(effect.latency)
        if effect.rule is not None and effect.rule.status is not None:
            status = effect.rule.status
            return error_response(status, effect.rule.code or "InternalError", "Injected fault", request.path)
        wanted = parse_range(range_header, sample_file.size)
        if wanted == "unsatisfiable":
            status = 416
            refused = error_response(416, "InvalidRange", "The requested range is not satisfiable", request.path)
            refused.headers["Content-Range"] = f"bytes */{sample_file.size}"
            return refused
        assert not isinstance(wanted, str)
        response, sent = await _stream(request, hub, sample_file, wanted, query, effect)
        status = response.status
        return response
    finally:
        hub.log.add(
            target="download",
            method=request.method,
            path=request.path,
            query=query,
            status=status,
            bytes_out=sent,
            duration=watch.elapsed(),
            file_id=file_id,
            range=range_header,
            fault=fault,
            peer=peer_of(request),
            extra={"file_type": file_type} if file_type else {},
        )


async def _endless(request: web.Request, response: web.StreamResponse) -> tuple[web.StreamResponse, int]:
    """Bytes until the client goes away (chunked: no Content-Length to tell it when to stop)."""
    del response.headers["Content-Length"]
    response.headers.pop("Content-Range", None)
    response.enable_chunked_encoding()
    sent = 0
    block = b"\xee" * CHUNK
    try:
        await response.prepare(request)
        while sent < ENDLESS_CAP:
            await response.write(block)
            sent += len(block)
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client stopped reading: the point of the fault
    return response, sent


async def _stream(
    request: web.Request,
    hub: Sandbox,
    sample_file: SampleFile,
    wanted: ByteRange | None,
    query: dict[str, str],
    effect: Effect,
) -> tuple[web.StreamResponse, int]:
    size = sample_file.size
    span = wanted or ByteRange(0, size - 1)
    response = web.StreamResponse(status=206 if wanted else 200)
    response.headers["Content-Type"] = "application/octet-stream"
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["ETag"] = f'"{sample_file.checksum_sha256[:32]}"'
    response.headers["Content-Disposition"] = query.get("response-content-disposition", "")
    response.headers["Content-Length"] = str(span.length if size else 0)
    if wanted:
        response.headers["Content-Range"] = f"bytes {span.first}-{span.last}/{size}"
    if request.method == "HEAD" or size == 0:
        await response.prepare(request)
        await response.write_eof()
        return response, 0
    rule = effect.rule
    if rule is not None and rule.endless and request.method == "GET":
        return await _endless(request, response)
    corrupt = rule is not None and rule.corrupt
    cut = rule.reset_after_bytes if rule is not None else None
    sent = 0
    try:
        async with hub.store.open(hub.config.deliverables_bucket, sample_file.key, span.first, span.last) as obj:
            await response.prepare(request)
            async for chunk in obj.body.iter_chunks(CHUNK):
                if corrupt and sent == 0 and chunk:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]  # one flipped byte breaks any checksum
                if cut is not None and sent + len(chunk) >= cut:
                    await response.write(chunk[: max(0, cut - sent)])
                    sent = cut
                    # Close (FIN after the bytes already written) rather than abort (RST): a reset makes the
                    # client's kernel drop data it has not read yet, so the cut point would be anyone's guess.
                    # The body ends short of its Content-Length either way: a broken transfer mid-body.
                    if request.transport is not None:
                        request.transport.close()
                    return response, sent
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
    except ConnectionResetError:
        pass  # the client closed early (e.g. a size probe before ranged downloads)
    except ClientError as exc:
        if response.prepared:
            raise
        code = exc.response.get("Error", {}).get("Code", "InternalError")
        status = 404 if code in ("NoSuchKey", "404") else 500
        return error_response(status, code, str(exc), request.path), 0
    return response, sent
