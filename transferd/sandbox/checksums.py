"""S3's integrity checks of a request body, as the sandbox's S3 proxy applies them (pure, incremental).

S3 refuses a request whose body does not match a checksum the request declares, and stores nothing:
* `Content-MD5` (base64 of 16 bytes): malformed -> 400 `InvalidDigest`, mismatch -> 400 `BadDigest`;
* one `x-amz-checksum-<algorithm>` header (crc32, crc32c, crc64nvme, sha1, sha256; base64 of the big-endian
  digest): malformed -> 400 `InvalidRequest`, mismatch -> 400 `BadDigest`; two of them -> 400 `InvalidRequest`;
* the same value sent as a trailer of an `aws-chunked` body (`x-amz-trailer: x-amz-checksum-crc32`), which is
  how botocore sends its own checksum of a streamed body; the chunk framing is decoded here for the check only.
The proxy holds back the last chunk of a body until `finish` has judged it, so a refused body never reaches the
S3 server whole (it drops the truncated request) and the client gets S3's answer.

`UploadPart` checksums are remembered by the proxy so that `CompleteMultipartUpload` can be refused when it
names a part checksum that differs from the one the part was sent with (400 `InvalidPart`), as S3 does. Not
checked: full-object (`x-amz-checksum-type: FULL_OBJECT`) checksums of a multipart upload.

Like S3, the proxy answers a verified PutObject or UploadPart with the checksum it verified
(`x-amz-checksum-<algorithm>`), and a CompleteMultipartUpload with the composite checksum of its parts
(`composite()`: the checksum of the concatenated part digests, `-<part count>` appended).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
_DIGEST_SIZE = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}
_MAX_FRAME_LINE = 4096  # an aws-chunked size or trailer line longer than this is not aws-chunked


@dataclass(frozen=True, slots=True)
class Refusal:
    """S3's answer to a body it will not store."""

    code: str
    message: str
    status: int = 400


class _Crc:
    """A running CRC with a hashlib-like face; CRC32C and CRC64NVME come from awscrt (the `sandbox` extra)."""

    def __init__(self, algorithm: str) -> None:
        self._fn: Callable[[bytes, int], int]
        if algorithm == "crc32":
            self._fn = zlib.crc32
        else:
            try:
                from awscrt import checksums
            except ModuleNotFoundError as e:  # pragma: no cover - the extra installs it
                raise RuntimeError(f"verifying {algorithm} needs awscrt: pip install 'transferd[sandbox]'") from e
            self._fn = checksums.crc32c if algorithm == "crc32c" else checksums.crc64nvme
        self._size = _DIGEST_SIZE[algorithm]
        self._value = 0

    def update(self, data: bytes | memoryview) -> None:
        self._value = self._fn(bytes(data) if isinstance(data, memoryview) else data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._size, "big")


def _hasher(algorithm: str) -> _Crc | hashlib._Hash:
    if algorithm in ("sha1", "sha256", "md5"):
        return hashlib.new(algorithm)
    return _Crc(algorithm)


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _decode(value: str, size: int) -> bytes | None:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def composite(algorithm: str, parts: list[str]) -> str:
    """S3's checksum of a multipart object, from its parts' base64 checksums in part order."""
    h = _hasher(algorithm)
    for value in parts:
        h.update(base64.b64decode(value))
    return f"{b64(h.digest())}-{len(parts)}"


def declared_checksums(headers: Mapping[str, str]) -> dict[str, str]:
    """{algorithm: base64 value} of the `x-amz-checksum-*` headers of a request (trailers not included)."""
    found = {}
    for algorithm in ALGORITHMS:
        value = headers.get(f"x-amz-checksum-{algorithm}")
        if value is not None:
            found[algorithm] = value
    return found


class _ChunkDecoder:
    """Decodes an aws-chunked body (`<hex size>[;ext]\\r\\n<data>\\r\\n ... 0\\r\\n<trailers>\\r\\n`) as it arrives:
    payload bytes go to `on_data`, trailer lines are kept in `trailers`."""

    def __init__(self, on_data: Callable[[bytes | memoryview], None]) -> None:
        self._on_data = on_data
        self._pending = bytearray()
        self._left = 0  # payload bytes of the current chunk still to come
        self._state = "size"  # size -> data -> crlf -> size ... -> trailer -> done
        self.trailers: dict[str, str] = {}
        self.error: str | None = None

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.error is None and self._state != "done":
            if self._state == "data":
                take = min(self._left, len(view))
                self._on_data(view[:take])
                view = view[take:]
                self._left -= take
                if self._left == 0:
                    self._state = "crlf"
                continue
            self._pending += view
            view = memoryview(b"")
            self._lines()

    def _lines(self) -> None:
        while self.error is None and self._state not in ("data", "done"):
            end = self._pending.find(b"\r\n")
            if end < 0:
                if len(self._pending) > _MAX_FRAME_LINE:
                    self.error = "an aws-chunked frame line is too long"
                return
            line = bytes(self._pending[:end])
            del self._pending[: end + 2]
            if self._state == "crlf":
                if line:
                    self.error = "an aws-chunked chunk is longer than its size"
                self._state = "size"
            elif self._state == "size":
                try:
                    self._left = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    self.error = f"bad aws-chunked size line {line[:40]!r}"
                    return
                self._state = "data" if self._left else "trailer"
            elif self._state == "trailer":
                if not line:
                    self._state = "done"
                    return
                name, sep, value = line.decode("latin-1").partition(":")
                if not sep:
                    self.error = f"bad aws-chunked trailer {line[:60]!r}"
                    return
                self.trailers[name.strip().lower()] = value.strip()
        if self._state == "data" and self._pending:
            rest, self._pending = bytes(self._pending), bytearray()
            self.feed(rest)

    def finish(self) -> None:
        if self.error is None and self._state != "done":
            self.error = "the aws-chunked body ended before its last chunk"


class BodyCheck:
    """Checks one request body against the checksums its request declares. `feed` every byte as it arrives,
    then `finish()`: None when S3 would accept the body, else the `Refusal` S3 answers with."""

    def __init__(self, md5: bytes | None, checksums: dict[str, bytes], trailer: str | None, chunked: bool) -> None:
        self._md5 = md5
        self._expected = checksums
        self._trailer = trailer  # algorithm whose value arrives as a trailer
        self._algorithms = [*checksums, *([trailer] if trailer else [])]
        self._hashers = {a: _hasher(a) for a in self._algorithms}
        if md5 is not None:
            self._hashers["md5"] = _hasher("md5")
        self._decoder = _ChunkDecoder(self._update) if chunked else None
        self.payload_bytes = 0

    @property
    def active(self) -> bool:
        return bool(self._hashers)

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> BodyCheck | Refusal:
        """The check a request asks for, or the refusal of a malformed declaration (before its body is read)."""
        md5: bytes | None = None
        if "Content-MD5" in headers:
            md5 = _decode(headers["Content-MD5"], 16)
            if md5 is None:
                return Refusal("InvalidDigest", "The Content-MD5 you specified was invalid.")
        declared = declared_checksums(headers)
        trailer_header = headers.get("x-amz-trailer", "").strip().lower()
        trailer = trailer_header.removeprefix("x-amz-checksum-") if trailer_header else None
        if trailer is not None and trailer not in ALGORITHMS:
            return Refusal("InvalidRequest", f"The value specified in the x-amz-trailer header is not supported: "
                                             f"{trailer_header}")  # fmt: skip
        if len(declared) + (trailer is not None) > 1:
            return Refusal("InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum Types are "
                                             "not allowed.")  # fmt: skip
        expected = {}
        for algorithm, value in declared.items():
            raw = _decode(value, _DIGEST_SIZE[algorithm])
            if raw is None:
                return Refusal("InvalidRequest", f"Value for x-amz-checksum-{algorithm} header is invalid.")
            expected[algorithm] = raw
        chunked = "aws-chunked" in headers.get("Content-Encoding", "").lower() or headers.get(
            "x-amz-content-sha256", ""
        ).startswith("STREAMING-")
        return cls(md5, expected, trailer, chunked)

    def _update(self, data: bytes | memoryview) -> None:
        self.payload_bytes += len(data)
        for h in self._hashers.values():
            h.update(data)

    def feed(self, data: bytes) -> None:
        if self._decoder is not None:
            self._decoder.feed(data)
        elif self._hashers:
            self._update(data)

    def finish(self) -> Refusal | None:
        if self._decoder is not None:
            self._decoder.finish()
            if self._decoder.error is not None:
                return Refusal("IncompleteBody", f"The request body is not valid aws-chunked: {self._decoder.error}.")
        if self._md5 is not None and self._hashers["md5"].digest() != self._md5:
            return Refusal("BadDigest", "The Content-MD5 you specified did not match what we received.")
        expected = dict(self._expected)
        if self._trailer is not None:
            value = self._decoder.trailers.get(f"x-amz-checksum-{self._trailer}") if self._decoder else None
            raw = _decode(value, _DIGEST_SIZE[self._trailer]) if value is not None else None
            if raw is None:
                return Refusal("InvalidRequest", f"Value for x-amz-checksum-{self._trailer} trailing header is "
                                                 "invalid.")  # fmt: skip
            expected[self._trailer] = raw
        for algorithm, want in expected.items():
            if self._hashers[algorithm].digest() != want:
                return Refusal("BadDigest", f"The {algorithm.upper()} you specified did not match the calculated "
                                            "checksum.")  # fmt: skip
        return None

    def checksums(self) -> dict[str, str]:
        """{algorithm: base64} of what was verified (after a `finish` that returned None)."""
        return {a: b64(self._hashers[a].digest()) for a in self._algorithms}
