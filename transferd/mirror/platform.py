"""The platform interface: everything the mirror asks of the service that holds the deliverables.

In the spirit of s5cmd's `storage` interface, it is deliberately small. A platform is bound to one
`[download] projects` entry and answers four questions:

* `changed_since(since)`: the project's samples, newest `modified` first, stopping once a sample is older than
  `since` (None: all of them). One listing request per page; no per-sample requests.
* `sample(sample_id)`: one sample with its deliverables and FRESH download URLs (signed URLs expire: call it
  again when a download answers 403). Raises `SampleNotFound`.
* `restore(sample_ids)`: ask for archived samples to be restored (only when `capabilities.supports_restore`).
* `capabilities`: `has_checksums` (else files are verified by size only, journalled as `verified='size'`) and
  `supports_restore`.

`source` is the platform's key in the journal (`"<api>:<host>:<project>"`), so the same project id on two
hosts or API generations never shares state. Implementations must be cheap to construct (no I/O) and release
their connections in `aclose()`.

To add an API generation: implement the protocol in a new class (for example `LegacyProjectsPlatform`) and
return it from `make_platform` for its `ProjectSource.api` value.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from transferd.config import Config, ProjectSource, resolve_api_key
from transferd.errors import UsageError
from transferd.gencove.client import GencoveClient, api_base
from transferd.gencove.models import parse_time
from transferd.mirror.template import default_filename
from transferd.network import DIRECT, Network
from transferd.retry import DEFAULT_POLICY, ApiError, Policy

# Archive states in which the deliverables can be downloaded (the reference client's prefix match).
DOWNLOADABLE_ARCHIVE = ("available", "restored")


class SampleNotFound(LookupError):
    """The platform does not know this sample (or it is not visible to this key)."""


class InvalidId(SampleNotFound):
    """An id (from a webhook, the command line or an answer) that cannot be one: never put into a URL path."""


# Gencove ids are UUIDs, the legacy ones integers: anything else (a `/`, `..`, `?`) could steer a request path.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def checked_id(value: str, what: str = "sample") -> str:
    if not _ID.fullmatch(value):
        raise InvalidId(f"{what} id {value!r} is not a valid id")
    return value


class MalformedResponse(ValueError):
    """The API answered without a field the mirror needs; the message names the sample and the field."""


class RestoreNotSupported(NotImplementedError):
    pass


@dataclass(frozen=True, slots=True)
class Capabilities:
    has_checksums: bool
    supports_restore: bool


@dataclass(frozen=True, slots=True)
class SampleSummary:
    """One row of a project's sample listing."""

    id: str
    client_id: str
    status: str  # analysis status: "succeeded", "failed qc", "running", ...
    archive_status: str  # "available", "archived", "restore_requested", "restored", "" when unknown
    modified: datetime
    status_time: datetime | None = None  # when the analysis reached `status` (for end-to-end latency)

    @property
    def downloadable(self) -> bool:
        return self.archive_status.lower().startswith(DOWNLOADABLE_ARCHIVE)


@dataclass(frozen=True, slots=True)
class Deliverable:
    """One file of a sample. `url` is fresh when the `SampleDetail` holding it was fetched."""

    file_id: str
    file_type: str
    url: str | None  # None while archived
    size: int | None
    sha256: str | None  # lowercase hex; None where the platform has no checksums
    default_filename: str


@dataclass(frozen=True, slots=True)
class SampleDetail:
    summary: SampleSummary
    project_id: str | None
    deliverables: tuple[Deliverable, ...]

    @property
    def id(self) -> str:
        return self.summary.id


@runtime_checkable
class Platform(Protocol):
    source: str
    project_id: str
    capabilities: Capabilities

    def changed_since(self, since: datetime | None) -> AsyncGenerator[SampleSummary, None]: ...

    async def sample(self, sample_id: str) -> SampleDetail: ...

    async def restore(self, sample_ids: Sequence[str]) -> None: ...

    async def aclose(self) -> None: ...


def source_key(api: str, host: str, project_id: str) -> str:
    return f"{api}:{api_base(host)}:{project_id}"


# -- Gencove API v2 ----------------------------------------------------------------------------------------------
class V2Platform:
    """Gencove API v2 over `GencoveClient` (which applies the retry policy to every request)."""

    capabilities = Capabilities(has_checksums=True, supports_restore=True)

    def __init__(
        self,
        host: str,
        api_key: str,
        project_id: str,
        *,
        timeout: float = 120.0,
        network: Network = DIRECT,
        policy: Policy = DEFAULT_POLICY,
    ) -> None:
        self.project_id = project_id
        self.source = source_key("v2", host, project_id)
        self._host, self._key, self._timeout, self._network = host, api_key, timeout, network
        self._policy = policy
        self._client: GencoveClient | None = None

    async def _api(self) -> GencoveClient:
        if self._client is None:  # the session is made lazily, inside the running loop
            client = GencoveClient(
                self._host, self._key, timeout=self._timeout, network=self._network, policy=self._policy
            )
            await client.__aenter__()
            self._client = client
        return self._client

    async def changed_since(self, since: datetime | None) -> AsyncGenerator[SampleSummary, None]:
        api = await self._api()
        pages = api.project_samples(self.project_id, sort_by="modified", sort_order="desc")
        # aclosing: leaving the loop early must stop the paging generator now, not at garbage collection.
        async with aclosing(pages) as rows:  # type: ignore[type-var]
            async for row in rows:
                try:
                    summary = _summary(row)
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    raise MalformedResponse(f"project {self.project_id}: a listed sample {_what(e)}") from None
                if since is not None and summary.modified < since:
                    return  # sorted newest first: everything after this is older still
                yield summary

    async def sample(self, sample_id: str) -> SampleDetail:
        api = await self._api()
        try:
            doc = await api.sample(checked_id(sample_id))
        except ApiError as e:
            if e.status == 404:
                raise SampleNotFound(f"sample {sample_id} not found") from None
            raise
        try:
            return _detail(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MalformedResponse(f"sample {sample_id}: the API's answer {_what(e)}") from None

    async def restore(self, sample_ids: Sequence[str]) -> None:
        api = await self._api()
        await api.restore(self.project_id, list(sample_ids))

    async def file_types(self) -> list[str]:
        """Not part of the protocol: the one-shot command validates `--file-types` with it."""
        api = await self._api()
        return await api.file_types(self.project_id)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _what(e: Exception) -> str:
    if isinstance(e, KeyError) and e.args:
        return f"has no {e.args[0]!r} field"
    return f"is malformed ({type(e).__name__}: {e})"


def _detail(doc: dict[str, Any]) -> SampleDetail:
    files = []
    for f in doc.get("files") or []:
        url = f.get("download_url") or None
        checksum = f.get("checksum_sha256") or None
        files.append(
            Deliverable(
                file_id=str(f["id"]),
                file_type=str(f.get("file_type") or ""),
                url=url,
                size=f.get("size"),
                sha256=checksum.lower() if checksum else None,
                default_filename=default_filename(url) if url else str(f.get("s3_path") or "").rpartition("/")[2],
            )
        )
    project = doc.get("project")
    return SampleDetail(_summary(doc), str(project) if project else None, tuple(files))


def _summary(doc: dict[str, Any]) -> SampleSummary:
    last = doc.get("last_status") or {}
    archive = doc.get("archive_last_status") or {}
    created = last.get("created")
    return SampleSummary(
        id=str(doc["id"]),
        client_id=str(doc.get("client_id") or ""),
        status=str(last.get("status") or ""),
        archive_status=str(archive.get("status") or ""),
        modified=parse_time(doc["modified"]),
        status_time=parse_time(created) if created else None,
    )


# -- the factory -------------------------------------------------------------------------------------------------
def make_platform(source: ProjectSource, config: Config, api_key: str, policy: Policy = DEFAULT_POLICY) -> Platform:
    """The platform for one `[download] projects` entry. `api_key` is the [gencove] key; a project's own
    `api_key_file` overrides it. Raises UsageError for API generations not implemented yet."""
    host = source.host or config.gencove.host
    key = resolve_api_key(config, source.api_key_file) if source.api_key_file else api_key
    if source.api == "v2":
        return V2Platform(host, key, source.id, timeout=config.gencove.request_timeout,
                          network=Network.from_config(config.network), policy=policy)  # fmt: skip
    if source.api in ("legacy-projects", "legacy-apps"):
        from transferd.mirror.platforms.legacy_platform import make_legacy_platform  # imports this module

        return make_legacy_platform(source, config, key)
    raise UsageError(f"{config.file}: download.projects: project {source.id}: unknown api {source.api!r}")
