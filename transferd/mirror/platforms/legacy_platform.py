"""Gencove's legacy REST APIs (projects/samples, apps/members) as a mirror `Platform`.

What the mirror asks, and what it costs (N samples in the project or app):
* `changed_since`: the legacy listings have no `modified` and no sort, so every cycle lists the whole project
  (`GET /projects/<id>/samples`: 1 request) and asks the status of the samples not yet known to be final: one
  `POST .../samples/orders` per 200 of them (projects), one `GET .../members/<id>/order` each (apps, which have
  no bulk call; 8 at a time). Final statuses (succeeded*/failed*) are remembered for the life of the process, so
  a steady-state cycle is ONE request; the first cycle after a start also asks every status once. The order's
  `updated` time (or, failing that, a stand-in derived from the status) is the summary's `modified`, which is
  how the loop's journal check skips samples already mirrored without any per-sample request.
* `sample(id)`: `POST .../raw-data {"sample_ids": [id]}` (fresh signed URLs for that sample only), a status
  request when the sample was not in a listing, and a one-byte ranged GET per wanted file for its size (see
  `legacy_probe`). A refused (expired) URL there is answered with one more raw-data call for that sample; a 403
  during the download reaches the same call through the loop's refresher.
  The trait JSON of a projects/samples row is written beside the files then (`legacy_traits`).
* The one-shot `transferd download --api legacy-...` fetches every finished sample's detail to size its progress
  bar, so a second run costs one raw-data call per sample and one probe per file, and downloads nothing.
* No checksums (files are verified by size: `downloads.verified = 'size'`) and no restore.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from transferd.config import Config, GencoveConfig, ProjectSource
from transferd.errors import ConfigError
from transferd.gencove.legacy_client import (
    GENERATIONS,
    LEGACY_HOST,
    Generation,
    LegacyClient,
    LegacyCredential,
    RawData,
)
from transferd.gencove.models import parse_time
from transferd.log import event
from transferd.mirror.platform import (
    Capabilities,
    Deliverable,
    RestoreNotSupported,
    SampleDetail,
    SampleNotFound,
    SampleSummary,
    source_key,
)
from transferd.mirror.platforms.legacy_files import (
    APP_FIELDS,
    PROJECT_FIELDS,
    TRAITS_TYPE,
    LegacyFile,
    deliverables,
    known_file_types,
    traits_document,
)
from transferd.mirror.platforms.legacy_probe import SizeProbe, UrlRefused
from transferd.mirror.platforms.legacy_traits import TraitsWriter
from transferd.retry import ApiError

log = logging.getLogger(__name__)

FINAL = ("succeeded", "failed")
CONCURRENCY = 8  # status GETs (apps) and size probes in flight per platform
_STANDIN_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
T = TypeVar("T")


class LegacyPlatform:
    capabilities = Capabilities(has_checksums=False, supports_restore=False)

    def __init__(
        self,
        gen: Generation,
        host: str,
        credential: LegacyCredential,
        group_id: str,
        *,
        traits: TraitsWriter | None = None,
        file_types: tuple[str, ...] = (),
        timeout: float = 120.0,
    ) -> None:
        self.gen, self.project_id = gen, group_id
        self.source = source_key(gen.api, host, group_id)
        self._host, self._cred, self._timeout = host, credential, timeout
        self._traits = traits if gen.traits else None
        self._file_types = file_types
        self._fields = PROJECT_FIELDS if gen.traits else APP_FIELDS
        self._client: LegacyClient | None = None
        self._probe = SizeProbe()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._summaries: dict[str, SampleSummary] = {}  # from the latest listing
        self._final: dict[str, dict[str, Any]] = {}  # orders in a final status: not asked again

    async def _api(self) -> LegacyClient:
        if self._client is None:  # the session is made lazily, inside the running loop
            self._client = await LegacyClient(self._host, self._cred, timeout=self._timeout).__aenter__()
        return self._client

    # -- listing ---------------------------------------------------------------------------------------------
    async def changed_since(self, since: datetime | None) -> AsyncGenerator[SampleSummary, None]:
        """Every participating sample (`since` cannot narrow a legacy listing; see the module doc for the cost)."""
        api = await self._api()
        rows = [r for r in await api.members(self.gen, self.project_id)
                if r.get("id") is not None and r.get("participating", True) is not False]  # fmt: skip
        orders = await self._orders([str(r["id"]) for r in rows if str(r["id"]) not in self._final])
        for row in rows:
            sample_id = str(row["id"])
            order = self._final.get(sample_id) or orders.get(sample_id) or {}
            summary = _summary(sample_id, row.get("external_id"), order)
            self._summaries[sample_id] = summary
            if summary.status.startswith(FINAL):
                self._final[sample_id] = order
            yield summary

    async def _orders(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        api = await self._api()
        if self.gen.bulk_orders:
            found = await api.orders(self.gen, self.project_id, [int(i) for i in ids])
        else:
            found = await _all([self._order(i) for i in ids])
        key = self.gen.member_id
        return {str(o[key]): o for o in found if o.get(key) is not None}

    async def _order(self, sample_id: str) -> dict[str, Any]:
        api = await self._api()
        async with self._slots:
            try:
                return await api.order(self.gen, self.project_id, sample_id)
            except ApiError as e:
                if e.status == 404:
                    return {}
                raise

    # -- one sample --------------------------------------------------------------------------------------------
    async def sample(self, sample_id: str) -> SampleDetail:
        if not (sample_id.isascii() and sample_id.isdigit()):  # e.g. a v2 UUID from a webhook: not one of ours
            raise SampleNotFound(f"{self.gen.member} {sample_id} not found")
        row, raw = await self._row(sample_id)
        summary = self._summaries.get(sample_id)
        if summary is None:
            order = await self._order(sample_id)
            if not order:
                raise SampleNotFound(f"{self.gen.member} {sample_id} not found in {self.gen.group} {self.project_id}")
            summary = _summary(sample_id, row.get("external_id"), order)
        elif row.get("external_id") is not None:
            summary = replace(summary, client_id=str(row["external_id"]))  # raw-data is the fresher source
        files, sizes, raw = await self._sized(sample_id, row, raw)
        if self._traits is not None:
            doc = traits_document(row, sample_id, self.gen.member_id, raw.trait_descriptions)
            if doc is not None:
                await self._traits.write(summary.client_id, sample_id, doc)
        found = tuple(
            Deliverable(f.file_id, f.file_type, f.url, sizes.get(f.file_id), None, f.default_filename) for f in files
        )
        return SampleDetail(summary, self.project_id, found)

    async def _row(self, sample_id: str) -> tuple[dict[str, Any], RawData]:
        api = await self._api()
        raw = await api.raw_data(self.gen, self.project_id, member_ids=[int(sample_id)])
        row = next((r for r in raw.rows if str(r.get(self.gen.member_id)) == sample_id), None)
        if row is None:
            raise SampleNotFound(f"{self.gen.member} {sample_id} not found in {self.gen.group} {self.project_id}")
        return row, raw

    async def _sized(
        self, sample_id: str, row: dict[str, Any], raw: RawData
    ) -> tuple[list[LegacyFile], dict[str, int], RawData]:
        """The files with their sizes; URLs refused on the way are replaced by one fresh raw-data call."""
        files = deliverables(row, sample_id, self._fields)
        try:
            return files, await self._sizes(files), raw
        except UrlRefused as e:
            event(log, "mirror.legacy_url_refused", sample=sample_id, error=str(e))
        row, raw = await self._row(sample_id)
        files = deliverables(row, sample_id, self._fields)
        try:
            return files, await self._sizes(files), raw
        except UrlRefused as e:
            raise UrlRefused(f"{self.gen.member} {sample_id}: {e}, even with fresh URLs") from None

    async def _sizes(self, files: list[LegacyFile]) -> dict[str, int]:
        async def one(f: LegacyFile) -> tuple[str, int]:
            async with self._slots:
                return f.file_id, await self._probe.size(f.url)

        wanted = [f for f in files if not self._file_types or f.file_type in self._file_types]
        return dict(await _all([one(f) for f in wanted]))

    async def restore(self, sample_ids: Sequence[str]) -> None:
        raise RestoreNotSupported(f"{self.gen.api} has no restore")

    async def file_types(self) -> list[str]:
        """Not part of the protocol: the one-shot command validates `--file-types` with it."""
        return known_file_types(self._fields) + ([TRAITS_TYPE] if self.gen.traits else [])

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await self._probe.aclose()


async def _all(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run them together; on failure raise ONE plain exception (a refused URL first), not an ExceptionGroup,
    so callers can catch `UrlRefused` / `ApiError` like the v2 platform's errors."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c) for c in coros]
    except ExceptionGroup as group:
        refused = group.subgroup(UrlRefused)
        raise (refused or group).exceptions[0] from None
    return [t.result() for t in tasks]


def _summary(sample_id: str, external_id: Any, order: dict[str, Any]) -> SampleSummary:
    status = _status(order.get("status"))
    updated = _date(order.get("updated"))
    return SampleSummary(
        id=sample_id,
        client_id=str(external_id or ""),
        status=status,
        archive_status="available",  # the legacy APIs never archive
        modified=updated or _standin(status),
        status_time=updated,
    )


def _status(value: Any) -> str:
    # The legacy vocabulary is not documented; the sandbox speaks v2's. Words meaning "finished" map to succeeded.
    text = str(value or "").strip().lower()
    return "succeeded" if text in ("complete", "completed", "delivered", "done") else text


def _standin(status: str) -> datetime:
    """A `modified` for an order without a time: it changes exactly when the status does."""
    offset = int.from_bytes(hashlib.sha256(status.encode()).digest()[:4], "big")
    return _STANDIN_EPOCH + timedelta(seconds=offset)


def _date(value: Any) -> datetime | None:
    """Legacy dates are objects (`{"year", "month", "day", "hour", "minute", "second"}`, UTC) or ISO strings."""
    if isinstance(value, str) and value:
        try:
            return parse_time(value)
        except ValueError:
            return None
    if isinstance(value, dict) and "year" in value:
        try:
            year, month, day, hour, minute, second = (
                int(value.get(k, default)) for k, default in (("year", 1), ("month", 1), ("day", 1),
                                                              ("hour", 0), ("minute", 0), ("second", 0))
            )  # fmt: skip
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except (TypeError, ValueError):
            return None
    return None


def make_legacy_platform(source: ProjectSource, config: Config, secret: str) -> LegacyPlatform:
    """The platform for a `legacy-projects` / `legacy-apps` entry. Without its own `host`, the entry uses the
    [gencove] host unless that is the v2 default, in which case it is rest.gencove.com."""
    gen = GENERATIONS[source.api]
    where = f"download.projects: project {source.id}"
    if not source.id.isdigit():
        raise ConfigError(str(config.file), where, f"{source.api} ids are integers, got {source.id!r}")
    default = config.gencove.host
    host = source.host or (LEGACY_HOST if default.rstrip("/") == GencoveConfig().host else default)
    try:
        credential = LegacyCredential.parse(secret)
    except ValueError as e:
        raise ConfigError(str(config.file), where, f"api_key_file: {e}") from None
    dl = config.download
    traits = TraitsWriter(dl.destination, dl.template, dl.file_types, dl.marker) if dl.destination is not None else None
    timeout = config.gencove.request_timeout
    return LegacyPlatform(gen, host, credential, source.id, traits=traits, file_types=dl.file_types, timeout=timeout)
