"""An S3-compatible sink: accepts uploads, reads and discards the bodies, remembers sizes and md5 ETags.

It exists to measure a client's ceiling with the server's cost (almost) out of the picture: per body it only
hashes (md5, for S3-like ETags, so clients' integrity checks pass) and counts. Path-style requests only; no
authentication. Enough of S3 for an upload engine and for the sandbox's own calls: CreateBucket, HeadBucket,
ListObjectsV2, PutObject, CopyObject, HeadObject, DeleteObject, CreateMultipartUpload, UploadPart, ListParts,
CompleteMultipartUpload, AbortMultipartUpload, ListMultipartUploads. GetObject answers 501 (nothing is kept).

Run: `python -m bench.sink [--host 127.0.0.1] [--port 0]`; prints `listening HOST:PORT` once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import signal
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import unquote
from xml.sax.saxutils import escape

from aiohttp import web

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
READ_CHUNK = 1024 * 1024
CHECKSUM_HEADERS = ("x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-sha1", "x-amz-checksum-sha256")


@dataclass(frozen=True, slots=True)
class StoredObject:
    size: int
    etag: str  # without quotes
    modified: datetime


@dataclass(frozen=True, slots=True)
class StoredPart:
    size: int
    etag: str
    modified: datetime
    checksums: tuple[tuple[str, str], ...] = ()


@dataclass
class MultipartUpload:
    bucket: str
    key: str
    initiated: datetime
    parts: dict[int, StoredPart] = field(default_factory=dict)


@dataclass
class SinkState:
    buckets: set[str] = field(default_factory=set)
    objects: dict[tuple[str, str], StoredObject] = field(default_factory=dict)
    uploads: dict[str, MultipartUpload] = field(default_factory=dict)
    bytes_received: int = 0


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _xml(root: str, body: str) -> web.Response:
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{S3_NS}">{body}</{root}>'
    return web.Response(body=text.encode(), content_type="application/xml")


def _el(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def _quoted(etag: str) -> str:
    return f'"{etag}"'


def _error(exc: S3Error, resource: str) -> web.Response:
    body = f"<Error>{_el('Code', exc.code)}{_el('Message', exc.message)}{_el('Resource', resource)}</Error>"
    return web.Response(
        status=exc.status,
        body=('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode(),
        content_type="application/xml",
    )


async def _consume(request: web.Request) -> tuple[int, str, tuple[tuple[str, str], ...]]:
    """Read the whole body, discarding it; (size, md5 hex, the checksums it names). Like every checksum header,
    an aws-chunked body's checksum trailer is named back unverified (the sink does no work it can avoid)."""
    if "aws-chunked" in request.headers.get("Content-Encoding", ""):
        size, digest, trailers = await _consume_aws_chunked(request)
        return size, digest, tuple((h, trailers[h]) for h in CHECKSUM_HEADERS if h in trailers)
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    while True:
        chunk = await request.content.read(READ_CHUNK)
        if not chunk:
            break
        md5.update(chunk)
        size += len(chunk)
    digest = md5.hexdigest()
    sent_md5 = request.headers.get("Content-MD5")
    if sent_md5 and base64.b64decode(sent_md5).hex() != digest:
        raise S3Error(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")
    return size, digest, _checksums(request)


async def _consume_aws_chunked(request: web.Request) -> tuple[int, str, dict[str, str]]:
    """Decode `<hex size>[;ext]\r\n<data>\r\n ... 0\r\n<trailers>\r\n` as S3 does (size and md5 are of the data
    alone); (size, md5 hex, trailers by lower-case name)."""
    content, md5, size = request.content, hashlib.md5(usedforsecurity=False), 0
    try:
        while True:
            line = (await content.readline()).rstrip(b"\r\n")
            try:
                left = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise S3Error(400, "IncompleteBody", f"bad aws-chunked size line {line[:40]!r}") from None
            if left == 0:
                break
            size += left
            while left:
                data = await content.readexactly(min(left, READ_CHUNK))
                md5.update(data)
                left -= len(data)
            if await content.readexactly(2) != b"\r\n":
                raise S3Error(400, "IncompleteBody", "an aws-chunked chunk does not end with CRLF")
        trailers: dict[str, str] = {}
        while line := (await content.readline()).rstrip(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            trailers[name.strip().lower()] = value.strip()
    except asyncio.IncompleteReadError:
        raise S3Error(400, "IncompleteBody", "the aws-chunked body ended early") from None
    decoded = request.headers.get("x-amz-decoded-content-length")
    if decoded is not None and int(decoded) != size:
        raise S3Error(400, "IncompleteBody", f"x-amz-decoded-content-length {decoded}, body {size} bytes")
    return size, md5.hexdigest(), trailers


def _checksums(request: web.Request) -> tuple[tuple[str, str], ...]:
    return tuple((h, request.headers[h]) for h in CHECKSUM_HEADERS if h in request.headers)


class Sink:
    def __init__(self) -> None:
        self.state = SinkState()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        bucket, _, raw_key = request.path.lstrip("/").partition("/")
        key = unquote(raw_key)
        try:
            if not bucket:
                return self._list_buckets()
            if not key:
                return await self._bucket_op(request, bucket)
            return await self._object_op(request, bucket, key)
        except S3Error as exc:
            if request.body_exists and not request.content.at_eof():
                await request.read()
            return _error(exc, request.path)

    # -- buckets ---------------------------------------------------------------------------------------------
    def _list_buckets(self) -> web.Response:
        created = _el("CreationDate", _iso(_now()))
        items = "".join(f"<Bucket>{_el('Name', b)}{created}</Bucket>" for b in sorted(self.state.buckets))
        return _xml("ListAllMyBucketsResult", f"<Buckets>{items}</Buckets>")

    async def _bucket_op(self, request: web.Request, bucket: str) -> web.Response:
        method = request.method
        if method == "PUT":
            await request.read()
            self.state.buckets.add(bucket)
            return web.Response(status=200)
        self._require_bucket(bucket)
        if method == "HEAD":
            return web.Response(status=200)
        if method == "GET" and "uploads" in request.query:
            return self._list_uploads(bucket, request.query.get("prefix", ""))
        if method == "GET":
            return self._list_objects(bucket, request.query.get("prefix", ""))
        if method == "DELETE":
            self.state.buckets.discard(bucket)
            return web.Response(status=204)
        raise S3Error(501, "NotImplemented", f"{method} on a bucket")

    def _require_bucket(self, bucket: str) -> None:
        if bucket not in self.state.buckets:
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist")

    def _list_objects(self, bucket: str, prefix: str) -> web.Response:
        rows = sorted((k, o) for (b, k), o in self.state.objects.items() if b == bucket and k.startswith(prefix))
        contents = "".join(
            f"<Contents>{_el('Key', k)}{_el('LastModified', _iso(o.modified))}{_el('ETag', _quoted(o.etag))}"
            f"{_el('Size', o.size)}<StorageClass>STANDARD</StorageClass></Contents>"
            for k, o in rows
        )
        body = f"{_el('Name', bucket)}{_el('Prefix', prefix)}{_el('KeyCount', len(rows))}<MaxKeys>1000000</MaxKeys>"
        return _xml("ListBucketResult", body + "<IsTruncated>false</IsTruncated>" + contents)

    def _list_uploads(self, bucket: str, prefix: str) -> web.Response:
        rows = sorted(
            (u.key, uid, u) for uid, u in self.state.uploads.items() if u.bucket == bucket and u.key.startswith(prefix)
        )
        items = "".join(
            f"<Upload>{_el('Key', k)}{_el('UploadId', uid)}{_el('Initiated', _iso(u.initiated))}</Upload>"
            for k, uid, u in rows
        )
        return _xml("ListMultipartUploadsResult", f"{_el('Bucket', bucket)}<IsTruncated>false</IsTruncated>{items}")

    # -- objects ---------------------------------------------------------------------------------------------
    async def _object_op(self, request: web.Request, bucket: str, key: str) -> web.StreamResponse:
        method, query = request.method, request.query
        upload_id = query.get("uploadId")
        if method == "PUT" and upload_id is not None and "partNumber" in query:
            return await self._upload_part(request, upload_id, int(query["partNumber"]))
        if method == "POST" and "uploads" in query:
            return await self._create_multipart(request, bucket, key)
        if method == "POST" and upload_id is not None:
            return await self._complete(request, bucket, key, upload_id)
        if method == "GET" and upload_id is not None:
            return self._list_parts(bucket, key, upload_id, query)
        if method == "DELETE" and upload_id is not None:
            self._upload(upload_id)
            del self.state.uploads[upload_id]
            return web.Response(status=204)
        if method == "PUT" and "x-amz-copy-source" in request.headers:
            return self._copy(request, bucket, key)
        if method == "PUT":
            return await self._put(request, bucket, key)
        if method == "HEAD":
            return self._head(bucket, key)
        if method == "DELETE":
            self.state.objects.pop((bucket, key), None)
            return web.Response(status=204)
        if method == "GET":
            raise S3Error(501, "NotImplemented", "the sink keeps no object data")
        raise S3Error(501, "NotImplemented", f"{method} on an object")

    async def _put(self, request: web.Request, bucket: str, key: str) -> web.Response:
        self._require_bucket(bucket)
        size, etag, checksums = await _consume(request)
        self.state.bytes_received += size
        self.state.objects[(bucket, key)] = StoredObject(size, etag, _now())
        return web.Response(status=200, headers={"ETag": f'"{etag}"', **dict(checksums)})

    def _copy(self, request: web.Request, bucket: str, key: str) -> web.Response:
        self._require_bucket(bucket)
        source = unquote(request.headers["x-amz-copy-source"]).lstrip("/").split("?", 1)[0]
        src_bucket, _, src_key = source.partition("/")
        obj = self.state.objects.get((src_bucket, src_key))
        if obj is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
        copied = StoredObject(obj.size, obj.etag, _now())
        self.state.objects[(bucket, key)] = copied
        return _xml("CopyObjectResult", _el("LastModified", _iso(copied.modified)) + _el("ETag", f'"{obj.etag}"'))

    def _head(self, bucket: str, key: str) -> web.Response:
        obj = self.state.objects.get((bucket, key))
        if obj is None:
            return web.Response(status=404)
        headers = {
            "ETag": _quoted(obj.etag),
            "Last-Modified": format_datetime(obj.modified, usegmt=True),
            "Content-Length": str(obj.size),  # a HEAD answer: the length a GET body would have
        }
        return web.Response(status=200, headers=headers)

    async def _create_multipart(self, request: web.Request, bucket: str, key: str) -> web.Response:
        self._require_bucket(bucket)
        await request.read()
        upload_id = uuid.uuid4().hex
        self.state.uploads[upload_id] = MultipartUpload(bucket, key, _now())
        body = _el("Bucket", bucket) + _el("Key", key) + _el("UploadId", upload_id)
        return _xml("InitiateMultipartUploadResult", body)

    def _upload(self, upload_id: str) -> MultipartUpload:
        upload = self.state.uploads.get(upload_id)
        if upload is None:
            raise S3Error(404, "NoSuchUpload", "The specified upload does not exist.")
        return upload

    async def _upload_part(self, request: web.Request, upload_id: str, number: int) -> web.Response:
        upload = self._upload(upload_id)
        size, etag, checksums = await _consume(request)
        self.state.bytes_received += size
        upload.parts[number] = StoredPart(size, etag, _now(), checksums)
        return web.Response(status=200, headers={"ETag": f'"{etag}"', **dict(checksums)})

    def _list_parts(self, bucket: str, key: str, upload_id: str, query: Mapping[str, str]) -> web.Response:
        upload = self._upload(upload_id)
        marker = int(query.get("part-number-marker", "0") or 0)
        max_parts = int(query.get("max-parts", "1000") or 1000)
        numbers = sorted(n for n in upload.parts if n > marker)
        page, rest = numbers[:max_parts], numbers[max_parts:]
        parts = "".join(
            f"<Part>{_el('PartNumber', n)}{_el('LastModified', _iso(upload.parts[n].modified))}"
            f"{_el('ETag', _quoted(upload.parts[n].etag))}{_el('Size', upload.parts[n].size)}</Part>"
            for n in page
        )
        body = (
            _el("Bucket", bucket) + _el("Key", key) + _el("UploadId", upload_id)
            + _el("PartNumberMarker", marker) + _el("NextPartNumberMarker", page[-1] if page else marker)
            + _el("MaxParts", max_parts) + _el("IsTruncated", "true" if rest else "false") + parts
        )  # fmt: skip
        return _xml("ListPartsResult", body)

    async def _complete(self, request: web.Request, bucket: str, key: str, upload_id: str) -> web.Response:
        upload = self._upload(upload_id)
        listed = _parse_complete(await request.read())
        if not listed:
            raise S3Error(400, "MalformedXML", "no parts listed")
        md5s = b""
        size = 0
        for number, etag in listed:
            part = upload.parts.get(number)
            if part is None or part.etag != etag:
                raise S3Error(400, "InvalidPart", f"part {number} was not uploaded or its ETag does not match")
            md5s += bytes.fromhex(part.etag)
            size += part.size
        etag = f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(listed)}"
        self.state.objects[(bucket, key)] = StoredObject(size, etag, _now())
        del self.state.uploads[upload_id]
        body = (
            _el("Location", f"{request.scheme}://{request.host}/{bucket}/{key}")
            + _el("Bucket", bucket) + _el("Key", key) + _el("ETag", f'"{etag}"')
        )  # fmt: skip
        return _xml("CompleteMultipartUploadResult", body)


def _parse_complete(raw: bytes) -> list[tuple[int, str]]:
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise S3Error(400, "MalformedXML", str(exc)) from None
    out = []
    for part in root.iter():
        if part.tag.rsplit("}", 1)[-1] != "Part":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "") for child in part}
        out.append((int(fields.get("PartNumber", "0")), fields.get("ETag", "").strip('"')))
    return out


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(Sink().app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    print(f"listening {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sink", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
