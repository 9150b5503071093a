"""The running sandbox: S3 server (moto subprocess or external), fault proxy, API server, background work.

`async with Sandbox(SandboxConfig(...)) as sandbox:` starts everything and exposes `sandbox.info`;
leaving the block stops the servers, cancels every task and stops moto. The CLI (`python -m
transferd.sandbox`) and the tests' `SandboxProcess` wrap this in a process of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote_plus

from aiohttp import web

from transferd.log import event
from transferd.sandbox import api, control, downloads, legacy
from transferd.sandbox.faults import FaultBook
from transferd.sandbox.info import SandboxInfo
from transferd.sandbox.reqlog import RequestLog
from transferd.sandbox.s3proxy import S3Proxy
from transferd.sandbox.s3server import MotoServer
from transferd.sandbox.s3store import S3Store
from transferd.sandbox.state import SandboxState, Settings, Upload
from transferd.sandbox.tasks import TaskSet
from transferd.sandbox.tls import TlsFiles, make_tls_files
from transferd.sandbox.webhooks import WebhookSender

log = logging.getLogger("transferd.sandbox")

POLL_INTERVAL = 0.5
HEAD_CONCURRENCY = 8
SAMPLE_CONCURRENCY = 4
SHUTDOWN_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    host: str = "127.0.0.1"
    port: int = 0
    s3_port: int = 0
    api_key: str = ""  # empty: a random key is made
    s3_endpoint: str | None = None  # an external S3 server instead of moto
    s3_access_key: str = "S3RVER"  # for the sandbox's own calls to an external server (s3rver's default)
    s3_secret_key: str = "S3RVER"
    s3_env: tuple[tuple[str, str], ...] = ()  # extra environment for moto, e.g. S3_UPLOAD_PART_MIN_SIZE
    bucket: str = "gencove-sandbox-uploads"
    deliverables_bucket: str = "gencove-sandbox-deliverables"
    project_id: str | None = None
    project_name: str = "sandbox"
    settings: Settings = field(default_factory=Settings)
    # How often uploads still `started` are checked with HeadObject; 0 = only when the API is asked about them.
    # Benchmarks turn it off: a HEAD on an object being written makes some S3 servers (s3rver) hash it.
    upload_poll_interval: float = POLL_INTERVAL
    # Download URLs presigned on the S3 server itself (like the real service's) instead of the /_dl route, which
    # adds faults but also a Python hop. Benchmarks use it; URL TTLs still apply, download faults do not.
    direct_download_urls: bool = False
    # The S3 server POSTs its event notifications to /_s3-events (as S3 notifies the real service): uploads are
    # then never HEADed on demand, which on some servers (s3rver) hashes objects still being written.
    s3_events: bool = False
    # Serve the API (and its download route) and the S3 proxy over HTTPS with a CA made at start; its
    # certificate is written to `tls_dir` (default: a temp folder removed at close) and named in `info.ca_file`.
    tls: bool = False
    tls_dir: str | None = None


class Sandbox:
    def __init__(self, config: SandboxConfig) -> None:
        if not config.api_key:
            config = _with_key(config, secrets.token_urlsafe(24))
        self.config = config
        self.faults = FaultBook()
        self.log = RequestLog()
        self.tasks = TaskSet("lifecycle")  # sample runs, restores, webhooks: cancelled by reset
        self._service_tasks = TaskSet("service")
        self.webhooks = WebhookSender(self.tasks)
        self.sample_slots = asyncio.Semaphore(SAMPLE_CONCURRENCY)
        self._head_slots = asyncio.Semaphore(HEAD_CONCURRENCY)
        self._project_id = config.project_id or str(uuid.uuid4())
        self._org_id, self._user_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.state = self._fresh_state()
        self._moto: MotoServer | None = None
        self._store: S3Store | None = None
        self._runners: list[web.AppRunner] = []
        self._tls: TlsFiles | None = None
        self._tls_tmp: tempfile.TemporaryDirectory[str] | None = None
        self._signer: downloads.UrlSigner | downloads.PresignedUrls | None = None
        self._info: SandboxInfo | None = None

    # -- what handlers use ---------------------------------------------------------------------------
    @property
    def info(self) -> SandboxInfo:
        assert self._info is not None, "sandbox not started"
        return self._info

    @property
    def store(self) -> S3Store:
        assert self._store is not None, "sandbox not started"
        return self._store

    @property
    def signer(self) -> downloads.UrlSigner | downloads.PresignedUrls:
        assert self._signer is not None, "sandbox not started"
        return self._signer

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)

    def credentials_ttl(self) -> float:
        override = self.faults.credentials_ttl()
        return self.state.settings.credentials_ttl if override is None else override

    def url_ttl(self) -> float:
        override = self.faults.url_ttl()
        return self.state.settings.url_ttl if override is None else override

    def credentials_expired(self, access_key: str) -> bool:
        return self.state.credentials_expired(access_key, self.now())

    def object_landed(self, bucket: str, key: str) -> None:
        upload = self.state.upload_for_object(bucket, key)
        if upload is None:
            return
        delay = self.state.settings.upload_notice_delay
        if delay <= 0:
            self.state.mark_upload_succeeded(upload.id, self.now())
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            if upload.id in self.state.uploads:
                self.state.mark_upload_succeeded(upload.id, self.now())

        self.tasks.spawn(later(), name=f"notice:{upload.id}")

    async def refresh_uploads(self, uploads: list[Upload]) -> list[Upload]:
        """Flip `started` uploads whose object exists to `succeeded` (the fallback to the proxy's notice; off
        while `upload_notice_delay` is set: then only the delayed notice does it)."""
        if self.state.settings.upload_notice_delay > 0 or self.config.s3_events:
            return uploads

        async def check(upload: Upload) -> Upload:
            if upload.last_status.status != "started" or upload.source_url:
                return upload
            async with self._head_slots:
                exists = await self.store.exists(upload.bucket, upload.key)
            current = self.state.uploads.get(upload.id)
            if exists and current is not None:
                return self.state.mark_upload_succeeded(upload.id, self.now())
            return current or upload

        return list(await asyncio.gather(*(check(u) for u in uploads)))

    # -- lifecycle -----------------------------------------------------------------------------------
    async def __aenter__(self) -> Sandbox:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self.config.s3_endpoint:
            upstream = self.config.s3_endpoint.rstrip("/")
        else:
            self._moto = MotoServer(self.config.host, env=dict(self.config.s3_env))
            await self._moto.start()
            upstream = self._moto.url
        self._store = await S3Store(upstream, self.config.s3_access_key, self.config.s3_secret_key).__aenter__()
        await self._ensure_buckets()
        await self.webhooks.open()

        if self.config.tls:
            folder = self.config.tls_dir
            if folder is None:
                self._tls_tmp = tempfile.TemporaryDirectory(prefix="transferd-sandbox-tls-")
                folder = self._tls_tmp.name
            self._tls = make_tls_files(Path(folder), self.config.host)
        # A short shutdown timeout: stopping must not wait a minute for a client's half-read download.
        proxy_runner = web.AppRunner(S3Proxy(upstream, self).app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        api_app = web.Application(
            middlewares=[control.control_middleware, api.api_middleware], client_max_size=16 * 1024 * 1024
        )
        api_app[api.HUB] = self
        api.add_routes(api_app)
        control.add_routes(api_app)
        legacy.add_routes(api_app)  # the legacy REST API (projects/samples, apps/members) on the same port
        api_app.router.add_get("/_dl/{file_id}", self._download)
        api_app.router.add_post("/_s3-events", self._s3_events)
        api_runner = web.AppRunner(api_app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        s3_url = await self._serve(proxy_runner, self.config.s3_port)
        api_url = await self._serve(api_runner, self.config.port)
        if self.config.direct_download_urls:
            self._signer = downloads.PresignedUrls(upstream, self.config.s3_access_key, self.config.s3_secret_key)
        else:
            self._signer = downloads.UrlSigner(api_url)
        self._info = SandboxInfo(
            api_url=api_url,
            s3_url=s3_url,
            api_key=self.config.api_key,
            project_id=self._project_id,
            bucket=self.config.bucket,
            deliverables_bucket=self.config.deliverables_bucket,
            pid=os.getpid(),
            s3_upstream_url=upstream,
            ca_file=str(self._tls.ca_file) if self._tls is not None else "",
        )
        if self.config.upload_poll_interval > 0:
            self._service_tasks.spawn(self._poll_uploads(), name="upload-poller")

    async def _serve(self, runner: web.AppRunner, port: int) -> str:
        await runner.setup()
        self._runners.append(runner)
        ssl_context = self._tls.server_context() if self._tls is not None else None
        site = web.TCPSite(runner, self.config.host, port, ssl_context=ssl_context)
        await site.start()
        bound_port = runner.addresses[0][1]
        return f"{'https' if ssl_context else 'http'}://{self.config.host}:{bound_port}"

    async def _download(self, request: web.Request) -> web.StreamResponse:
        return await downloads.serve_download(request, self)

    async def _s3_events(self, request: web.Request) -> web.Response:
        """An S3 event notification (`{"Records": [{"eventName", "s3": {"bucket": {"name"}, "object": {"key"}}}]}`):
        an ObjectCreated record marks the upload of that object succeeded. Unknown objects are ignored."""
        try:
            records = (await request.json()).get("Records") or []
            for r in records:
                if str(r.get("eventName", "")).startswith("ObjectCreated"):
                    self.object_landed(r["s3"]["bucket"]["name"], unquote_plus(r["s3"]["object"]["key"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return web.json_response({"error": f"not an S3 event notification: {exc}"}, status=400)
        return web.json_response({"ok": True})

    async def close(self) -> None:
        await self._service_tasks.cancel_all()
        await self.tasks.cancel_all()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.webhooks.close()
        if self._store is not None:
            await self._store.__aexit__(None, None, None)
            self._store = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._tls_tmp is not None:
            self._tls_tmp.cleanup()
            self._tls_tmp = None

    async def reset(self) -> None:
        """Forget all uploads, samples, faults and logs; recreate the buckets and the ready project."""
        await self.tasks.cancel_all()
        self.faults.clear()
        self.log.clear()
        self.webhooks.records.clear()
        self.state = self._fresh_state()
        if self._moto is not None:
            await self._moto.reset()
        await self._ensure_buckets()

    def _fresh_state(self) -> SandboxState:
        state = SandboxState(
            organization_id=self._org_id,
            user_id=self._user_id,
            upload_bucket=self.config.bucket,
            settings=self.config.settings,
        )
        state.add_project(self.config.project_name, self.now(), self._project_id)
        return state

    async def _ensure_buckets(self) -> None:
        for bucket in (self.config.bucket, self.config.deliverables_bucket):
            await self.store.ensure_bucket(bucket)

    async def _poll_uploads(self) -> None:
        while True:
            await asyncio.sleep(self.config.upload_poll_interval)
            started = self.state.started_uploads()
            if not started:
                continue
            try:
                await self.refresh_uploads(started)
            except Exception as exc:  # S3 hiccups must not end the poller
                event(log, "sandbox.upload_poll_failed", logging.WARNING, error=repr(exc))


def _with_key(config: SandboxConfig, key: str) -> SandboxConfig:
    return replace(config, api_key=key)
