"""A streaming reverse proxy in front of the S3 server: request log, fault injection, credential expiry,
and S3's body integrity checks.

Clients are given this proxy's URL as "the S3 endpoint". Bodies stream through in chunks both ways;
status codes, Content-Length, ETag, x-amz-* headers and XML error bodies pass unchanged. The upstream
(moto) does not check signatures, so the original headers, Host included, are forwarded as they are.
Neither moto nor s3rver verifies `Content-MD5` or `x-amz-checksum-*`, so the proxy does, as S3 does
(`checksums.py`): a request body that does not match what its request declares is refused with S3's error and
never reaches the server whole (its last chunk is held back until the body has been judged).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from transferd.log import event
from transferd.sandbox.checksums import ALGORITHMS, BodyCheck, Refusal, composite
from transferd.sandbox.faults import S3_ERROR_MESSAGES, FaultBook, s3_error_code
from transferd.sandbox.reqlog import RequestLog, Stopwatch, peer_of

log = logging.getLogger("transferd.sandbox")

CHUNK = 256 * 1024
RESET_READ_LIMIT = 1024 * 1024
COMPLETE_BODY_LIMIT = 16 * 1024 * 1024  # a CompleteMultipartUpload of 10,000 parts is ~1 MiB of XML
# Hop-by-hop headers (RFC 9110 7.6.1) plus Expect: the proxy answers 100-continue itself.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade", "expect", "proxy-connection"}
)  # fmt: skip
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_SIGV2 = re.compile(r"^AWS ([^:\s]+):")


@dataclass(frozen=True, slots=True)
class S3Request:
    operation: str
    bucket: str | None
    key: str | None
    part: int | None
    upload_id: str | None


def classify(method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> S3Request:
    """Name the S3 operation of a path-style request."""
    bucket, _, raw_key = path.lstrip("/").partition("/")
    key = unquote(raw_key) or None
    part_text = query.get("partNumber")
    part = int(part_text) if part_text and part_text.isdigit() else None
    upload_id = query.get("uploadId")
    copy = "x-amz-copy-source" in headers
    method = method.upper()
    if not bucket:
        op = "ListBuckets"
    elif key is None:
        op = {
            "PUT": "CreateBucket",
            "DELETE": "DeleteBucket",
            "HEAD": "HeadBucket",
            "POST": "DeleteObjects" if "delete" in query else "PostBucket",
        }.get(method, "")
        if method == "GET":
            if "uploads" in query:
                op = "ListMultipartUploads"
            elif "versions" in query:
                op = "ListObjectVersions"
            elif "location" in query:
                op = "GetBucketLocation"
            else:
                op = "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
    elif method == "PUT":
        if upload_id and part is not None:
            op = "UploadPartCopy" if copy else "UploadPart"
        elif "tagging" in query:
            op = "PutObjectTagging"
        else:
            op = "CopyObject" if copy else "PutObject"
    elif method == "POST":
        op = "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload" if upload_id else "PostObject"
    elif method == "GET":
        op = "ListParts" if upload_id else "GetObjectTagging" if "tagging" in query else "GetObject"
    elif method == "HEAD":
        op = "HeadObject"
    elif method == "DELETE":
        op = "AbortMultipartUpload" if upload_id else "DeleteObject"
    else:
        op = method
    return S3Request(operation=op or method, bucket=bucket or None, key=key, part=part, upload_id=upload_id)


def access_key_of(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The access key id a request is signed with (SigV4 header, presigned query, or SigV2)."""
    auth = headers.get("Authorization", "")
    match = _CREDENTIAL.search(auth) or _SIGV2.search(auth)
    if match:
        return match.group(1)
    credential = query.get("X-Amz-Credential") or query.get("AWSAccessKeyId")
    return credential.split("/", 1)[0] if credential else None


def error_xml(code: str, message: str, resource: str, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{resource}</Resource>"
        f"<RequestId>{request_id}</RequestId><HostId>sandbox</HostId></Error>"
    ).encode()


def error_response(status: int, code: str, message: str, resource: str) -> web.Response:
    request_id = secrets.token_hex(8).upper()
    return web.Response(
        status=status,
        body=error_xml(code, message, resource, request_id),
        content_type="application/xml",
        headers={"x-amz-request-id": request_id},
    )


class ProxyHooks(Protocol):
    """What the proxy needs from the sandbox."""

    @property
    def log(self) -> RequestLog: ...

    @property
    def faults(self) -> FaultBook: ...

    def credentials_expired(self, access_key: str) -> bool: ...

    def object_landed(self, bucket: str, key: str) -> None: ...


class _Counter:
    def __init__(self) -> None:
        self.n = 0


class S3Proxy:
    def __init__(self, upstream: str, hooks: ProxyHooks) -> None:
        self._upstream = upstream.rstrip("/")
        self._hooks = hooks
        self._session: aiohttp.ClientSession | None = None
        # (upload id, part number) -> {algorithm: base64} the part was stored with, for CompleteMultipartUpload
        self._part_checksums: dict[tuple[str, int], dict[str, str]] = {}
        # (bucket, key) -> {algorithm: base64} S3 keeps with an object and names on HEAD/GET with ChecksumMode
        self._object_checksums: dict[tuple[str, str], dict[str, str]] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300),
            auto_decompress=False,
        )

    async def _close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        watch = Stopwatch()
        query = {k: v for k, v in request.query.items()}
        s3req = classify(request.method, request.path, query, request.headers)
        bytes_in = _Counter()
        bytes_out = _Counter()
        status = 0
        fault: str | None = None
        try:
            access_key = access_key_of(request.headers, query)
            if access_key and self._hooks.credentials_expired(access_key):
                await _drain(request, bytes_in)
                fault = "expired credentials"
                status = 400
                return error_response(400, "ExpiredToken", "The provided token has expired.", request.path)
            effect = self._hooks.faults.take_s3(request.method, s3req.operation, s3req.part)
            fault = effect.description
            if effect.latency:
                await asyncio.sleep(effect.latency)
            rule = effect.rule
            if rule is not None and rule.reset:
                await _read_some(request, bytes_in)
                return _abort(request)
            if rule is not None and rule.status is not None:
                await _drain(request, bytes_in)
                status = rule.status
                code = s3_error_code(rule)
                message = rule.message or S3_ERROR_MESSAGES.get(code, code)
                return error_response(rule.status, code, message, request.path)
            check = BodyCheck.of({} if effect.raw_chunked else request.headers)
            if isinstance(check, Refusal):
                await _drain(request, bytes_in)
                status, fault = check.status, f"refused: {check.code}"
                return error_response(check.status, check.code, check.message, request.path)
            corrupt = rule is not None and rule.corrupt  # a byte flipped in transit, as by a bad NIC or proxy
            body: _Inbound | bytes = _Inbound(request, bytes_in, check, effect.read_rate, corrupt)
            echo: dict[str, str] | None = None  # the checksums the answer carries (else the body's, once verified)
            if s3req.operation == "CompleteMultipartUpload" and s3req.upload_id:
                raw = await _read_all(request, bytes_in, COMPLETE_BODY_LIMIT)
                judged = self._check_complete(s3req.upload_id, raw)
                if isinstance(judged, Refusal):
                    status, fault = judged.status, f"refused: {judged.code}"
                    return error_response(judged.status, judged.code, judged.message, request.path)
                body, echo = raw, judged
            stored = self._object_checksums.get((s3req.bucket or "", s3req.key or ""), {})
            if request.method not in ("GET", "HEAD") or request.headers.get("x-amz-checksum-mode") != "ENABLED":
                stored = {}
            response = await self._forward(
                request, body, bytes_out, effect.response_latency, echo, stored, raw_chunked=effect.raw_chunked
            )
            status = response.status
            if s3req.bucket and s3req.key and status in (200, 204):
                where = (s3req.bucket, s3req.key)
                if s3req.operation == "PutObject" and isinstance(body, _Inbound):
                    self._object_checksums[where] = body.verified()
                elif s3req.operation == "CompleteMultipartUpload":
                    self._object_checksums[where] = echo or {}
                elif s3req.operation == "DeleteObject":
                    self._object_checksums.pop(where, None)
            if isinstance(body, _Inbound) and body.refusal is not None:
                fault = ", ".join(filter(None, [fault, f"refused: {body.refusal.code}"]))
            if status == 200 and s3req.operation == "UploadPart" and s3req.upload_id and s3req.part is not None:
                self._part_checksums[(s3req.upload_id, s3req.part)] = check.checksums()
            if status in (200, 204) and s3req.upload_id and s3req.operation in (
                "CompleteMultipartUpload", "AbortMultipartUpload"
            ):  # fmt: skip
                for k in [k for k in self._part_checksums if k[0] == s3req.upload_id]:
                    del self._part_checksums[k]
            if (
                status == 200
                and s3req.bucket
                and s3req.key
                and (s3req.operation in ("PutObject", "CopyObject", "CompleteMultipartUpload"))
            ):
                self._hooks.object_landed(s3req.bucket, s3req.key)
            return response
        finally:
            self._hooks.log.add(
                target="s3",
                method=request.method,
                path=request.path,
                query=query,
                status=status,
                bytes_in=bytes_in.n,
                bytes_out=bytes_out.n,
                duration=watch.elapsed(),
                operation=s3req.operation,
                part=s3req.part,
                upload_id=s3req.upload_id,
                bucket=s3req.bucket,
                key=s3req.key,
                fault=fault,
                peer=peer_of(request),
            )

    def _check_complete(self, upload_id: str, raw: bytes) -> Refusal | dict[str, str]:
        """S3 refuses a CompleteMultipartUpload that names a part checksum the part was not stored with; else
        {algorithm: composite checksum} for the algorithms every listed part was sent with."""
        try:
            root = ET.fromstring(raw)
        except ET.ParseError:
            return {}  # the server answers MalformedXML itself
        listed: list[dict[str, str]] = []
        for part in root.iter():
            if not part.tag.endswith("Part"):
                continue
            fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in part}
            number = fields.get("PartNumber", "")
            stored = self._part_checksums.get((upload_id, int(number))) if number.isdigit() else None
            listed.append(stored or {})
            if stored is None:
                continue  # a part this proxy did not see (sent before a restart): the server judges it
            for algorithm in ALGORITHMS:
                named = fields.get(f"Checksum{algorithm.upper()}")
                if named is not None and stored.get(algorithm) != named:
                    return Refusal(
                        "InvalidPart",
                        "One or more of the specified parts could not be found. The part may not have been "
                        "uploaded, or the specified entity tag may not match the part's entity tag.",
                    )
        return {a: composite(a, [p[a] for p in listed]) for a in ALGORITHMS if listed and all(a in p for p in listed)}

    async def _forward(
        self,
        request: web.Request,
        body: _Inbound | bytes,
        bytes_out: _Counter,
        hold: float = 0.0,
        echo: dict[str, str] | None = None,
        stored: dict[str, str] | None = None,
        *,
        raw_chunked: bool = False,
    ) -> web.StreamResponse:
        assert self._session is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        if raw_chunked and "aws-chunked" in headers.get("Content-Encoding", ""):  # the server sees opaque bytes
            for name in ("Content-Encoding", "x-amz-decoded-content-length", "x-amz-trailer",
                         "x-amz-sdk-checksum-algorithm"):  # fmt: skip
                headers.popall(name, None)
            headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        data: bytes | AsyncIterator[bytes] | None = body if isinstance(body, bytes) else None
        if isinstance(body, _Inbound) and request.body_exists:
            data = body.stream()
        url = URL(self._upstream + request.raw_path, encoded=True)
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                skip_auto_headers=("Content-Type", "Accept", "Accept-Encoding", "User-Agent"),
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if isinstance(body, _Inbound) and body.refusal is not None:  # we cut the body short: S3's answer
                r = body.refusal
                return error_response(r.status, r.code, r.message, request.path)
            event(log, "sandbox.s3_upstream_failed", logging.WARNING, url=str(url), error=repr(exc))
            return error_response(503, "ServiceUnavailable", f"S3 upstream unavailable: {exc}", request.path)
        async with upstream:
            if hold:
                await asyncio.sleep(hold)  # upstream has done the work; its answer is late
            if echo and upstream.status == 200:  # a Complete: S3 names the object's checksum in its answer
                answer = _with_checksums(await upstream.read(), echo)
                bytes_out.n += len(answer)
                kept = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}]
                return web.Response(status=200, body=answer, headers=CIMultiDict(kept))
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP and not (raw_chunked and name.lower().startswith("x-amz-checksum-")):
                    response.headers.add(name, value)
            if upstream.status == 200:  # S3 names the checksum it verified, or keeps (ChecksumMode on HEAD/GET)
                named = body.verified() if isinstance(body, _Inbound) else {}
                for algorithm, value in {**(stored or {}), **named}.items():
                    response.headers.setdefault(f"x-amz-checksum-{algorithm}", value)
            try:
                await response.prepare(request)
                if request.method != "HEAD":
                    async for chunk in upstream.content.iter_chunked(CHUNK):
                        await response.write(chunk)
                        bytes_out.n += len(chunk)
                await response.write_eof()
            except ConnectionResetError:
                pass  # the client went away mid-body; the log keeps what was sent
            except (TimeoutError, aiohttp.ClientError) as exc:
                event(log, "sandbox.s3_upstream_broke", logging.WARNING, url=str(url), error=repr(exc))
                _abort(request)  # headers are out: a dropped connection is the only honest signal
        return response


class _BodyRefused(Exception):
    """Raised into the upstream request to cut a refused body short (the server then stores nothing)."""


class _Inbound:
    """A request body on its way upstream: counted, read at the fault's rate if any, and checked; the last chunk
    is held back until the whole body has been judged."""

    def __init__(
        self, request: web.Request, counter: _Counter, check: BodyCheck, rate: int | None, corrupt: bool = False
    ) -> None:
        self._request = request
        self._counter = counter
        self._check = check
        self._rate = rate
        self._corrupt = corrupt
        self._done = False
        self.refusal: Refusal | None = None

    async def stream(self) -> AsyncIterator[bytes]:
        started = time.monotonic()
        held: bytes | None = None
        async for chunk in self._request.content.iter_chunked(CHUNK):
            self._counter.n += len(chunk)
            if self._corrupt and (len(chunk) >= 1024 or len(chunk) == self._request.content_length):
                i = len(chunk) // 2  # a byte mid-chunk: payload, not aws-chunked framing
                chunk, self._corrupt = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :], False
            self._check.feed(chunk)
            if self._rate:  # a slow link: the client's socket buffer fills and its transport queues the rest
                ahead = self._counter.n / self._rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if held is not None:
                yield held
            held = chunk
        self.refusal = self._check.finish()
        if self.refusal is not None:
            raise _BodyRefused(self.refusal.code)
        if held is not None:
            yield held
        self._done = True

    def verified(self) -> dict[str, str]:
        """{algorithm: base64} the whole body was verified against (empty before the end or after a refusal)."""
        return self._check.checksums() if self._done and self.refusal is None else {}


def _with_checksums(answer: bytes, checksums: dict[str, str]) -> bytes:
    """A CompleteMultipartUploadResult with the object's checksums in it, as S3 writes them (moto leaves them out)."""
    end = answer.rfind(b"</CompleteMultipartUploadResult>")
    if end < 0:
        return answer
    add = b"".join(
        f"<Checksum{a.upper()}>{v}</Checksum{a.upper()}>".encode()
        for a, v in checksums.items()
        if f"<Checksum{a.upper()}>".encode() not in answer
    )
    return answer[:end] + add + answer[end:]


async def _read_all(request: web.Request, counter: _Counter, limit: int) -> bytes:
    data = bytearray()
    async for chunk in request.content.iter_chunked(CHUNK):
        counter.n += len(chunk)
        if len(data) + len(chunk) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data) + len(chunk))
        data += chunk
    return bytes(data)


async def _drain(request: web.Request, counter: _Counter) -> None:
    async for chunk in request.content.iter_chunked(CHUNK):
        counter.n += len(chunk)


async def _read_some(request: web.Request, counter: _Counter) -> None:
    """Read part of the body (half, at most 1 MiB), as a server would before the line drops."""
    limit = min((request.content_length or 2) // 2, RESET_READ_LIMIT)
    while counter.n < max(limit, 1):
        chunk = await request.content.read(max(limit, 1) - counter.n)
        if not chunk:
            break
        counter.n += len(chunk)


def _abort(request: web.Request) -> web.Response:
    """Drop the connection (a TCP reset for the client). The returned response is never sent."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)
