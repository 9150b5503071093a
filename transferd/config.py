"""Configuration: TOML in, frozen typed values out. Pure (reads only the config file and, lazily, secrets).

Every problem is a `ConfigError` naming the file, the key (dotted, with `[[watch]]` entries numbered from 1)
and what was expected. Unknown keys are errors, so a typo is never silently ignored. Durations and sizes accept
human units ("90s", "5m", "64MiB"). Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from transferd.errors import ConfigError, ConfigErrors
from transferd.template_syntax import DEFAULT_TEMPLATE, check_template
from transferd.units import parse_duration, parse_size

API_KINDS = ("v2", "legacy-projects", "legacy-apps")
API_KEY_ENV = "TRANSFERD_API_KEY"
# Name of the systemd credential (LoadCredential=gencove-api-key:/etc/transferd/api-key).
API_KEY_CREDENTIAL = "gencove-api-key"


@dataclass(frozen=True, slots=True)
class GencoveConfig:
    host: str = "https://api.gencove.com"
    api_key_file: Path | None = None
    s3_endpoint_url: str = ""  # empty: AWS
    s3_region: str = "us-east-1"
    # "when_supported": per-part CRC32 checksums that S3 verifies; "when_required" for S3-compatible
    # servers that break on them (tech-notes §3.3).
    s3_checksums: str = "when_supported"
    request_timeout: float = 120.0


@dataclass(frozen=True, slots=True)
class StateConfig:
    path: Path = Path("/var/lib/transferd/journal.sqlite3")


SINGLE_PUT_LIMIT = 5 * 1024**3  # S3: one PutObject carries at most 5 GiB


@dataclass(frozen=True, slots=True)
class UploadConfig:
    concurrency: int = 8  # concurrent S3 part requests, all objects together
    max_objects: int = 4  # objects uploading at once
    max_bytes_in_flight: int = 96 * 1024**2  # global budget of part buffers
    part_size: int = 8 * 1024**2  # minimum part size; grows so 10,000 parts are never exceeded
    single_put_max: int = 200 * 1024**2  # objects up to this size go as one streamed PutObject; 0 = never
    retry_deadline: float = 3600.0  # how long one part or API call keeps retrying
    assign_deadline: float = 1800.0  # how long to wait for uploads to appear in the sample sheet


@dataclass(frozen=True, slots=True)
class WatchConfig:
    path: Path
    destination: str  # gncv folder, normalised: "gncv://name" (no trailing slash)
    project_id: str | None = None  # None: upload only, no assignment
    settle_seconds: float = 60.0
    completion: str = "auto"  # auto | markers | quiet
    quiet_seconds: float | None = None
    markers: tuple[str, ...] = ()
    single_end: bool = False
    include_index_reads: bool = False
    include_undetermined: bool = False
    client_id_policy: str = "replace"  # replace | reject
    rescan_interval: float = 60.0
    use_inotify: bool = True
    metadata: Any = None  # JSON sent with the assignment
    allow_outside_root: bool = False  # upload sources that resolve outside `path` (symlinks, manifest rows)

    def rules(self) -> Any:
        """The discovery rules for this watch (`transferd.discovery.rules.DiscoveryRules`)."""
        from transferd.discovery.rules import DiscoveryRules

        return DiscoveryRules(
            settle_seconds=self.settle_seconds,
            completion=self.completion,
            quiet_seconds=self.quiet_seconds,
            markers=self.markers,
            single_end=self.single_end,
            include_index_reads=self.include_index_reads,
            include_undetermined=self.include_undetermined,
            client_id_policy=self.client_id_policy,
        )


@dataclass(frozen=True, slots=True)
class ProjectSource:
    """One project to mirror, and the API generation that serves it."""

    id: str
    api: str = "v2"  # v2 | legacy-projects | legacy-apps
    host: str = ""  # empty: [gencove] host
    api_key_file: Path | None = None  # empty: the [gencove] key


@dataclass(frozen=True, slots=True)
class DownloadConfig:
    destination: Path | None = None
    projects: tuple[ProjectSource, ...] = ()
    template: str = DEFAULT_TEMPLATE
    file_types: tuple[str, ...] = ()  # exact file_type keys; empty = all
    interval: float = 300.0
    include_failed: bool = False
    auto_restore: bool = False
    concurrency: int = 8  # files in flight
    max_bytes_in_flight: int = 64 * 1024**2
    webhook_secret_file: Path | None = None
    webhook_tolerance: float = 300.0
    marker: str = ""  # a file that must exist in `destination` (an unmounted share lacks it); "" = none
    recheck_interval: float = 3600.0  # stat every mirrored file this often; missing or changed ones are refetched
    full_relist_interval: float = 86400.0  # list the whole project this often, past the watermark (0 = never)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9464"  # host:port of /metrics, /healthz, /readyz and the webhook route

    @property
    def host_port(self) -> tuple[str, int]:
        return _host_port(self.listen)


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "kv"  # kv | json


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    shutdown_grace: float = 30.0  # SIGTERM: in-flight parts may finish within this
    watchdog: bool = True  # systemd WATCHDOG=1 pings when WATCHDOG_USEC is set


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Where Gencove's webhooks are received. With `listen` set, POST /webhooks/gencove is served there alone (a
    listener that can be opened to Gencove without exposing /metrics and the probes) and no longer on
    [metrics] listen; empty keeps it on the metrics listener."""

    listen: str = ""

    @property
    def host_port(self) -> tuple[str, int] | None:
        return _host_port(self.listen) if self.listen else None


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """How every HTTP client reaches the outside (API, S3, downloads). Unset keys fall back to the usual
    environment: HTTPS_PROXY/HTTP_PROXY/NO_PROXY, and SSL_CERT_FILE/REQUESTS_CA_BUNDLE/AWS_CA_BUNDLE."""

    proxy: str = ""  # e.g. http://proxy.example.org:3128; empty: the environment's, if any
    no_proxy: tuple[str, ...] = ()  # hosts (or .domain suffixes) reached directly
    ca_file: Path | None = None  # PEM of a private CA (e.g. a proxy that re-signs TLS), trusted besides the system's


@dataclass(frozen=True, slots=True)
class Config:
    file: Path
    gencove: GencoveConfig = field(default_factory=GencoveConfig)
    state: StateConfig = field(default_factory=StateConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    watches: tuple[WatchConfig, ...] = ()
    download: DownloadConfig = field(default_factory=DownloadConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)

    def api_key(self) -> str:
        return resolve_api_key(self)


# ----------------------------------------------------------------------------------------------------------
class _Invalid(ConfigError):
    """One bad key, already recorded: the value falls back to its default so that the rest is still read."""


class _Table:
    """Reads one TOML table, tracking which keys were used so that leftovers are reported. Every problem is
    recorded in `errors` (shared by the tables of one file), so a config is judged whole, not up to its first
    mistake; `parse_config` raises them together."""

    def __init__(self, file: Path, prefix: str, data: Any, errors: list[ConfigError] | None = None) -> None:
        self.file, self.prefix = file, prefix
        self.errors: list[ConfigError] = [] if errors is None else errors
        if not isinstance(data, dict):
            self.fail("", f"expected a table, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.prefix}.{k}" if self.prefix else k

    def fail(self, k: str, msg: str) -> None:
        error = _Invalid(str(self.file), self.key(k) if k else self.prefix, msg)
        self.errors.append(error)
        raise error

    def complain(self, k: str, msg: str) -> None:
        """Record a bad value that falls back to its default; reading goes on."""
        with contextlib.suppress(_Invalid):
            self.fail(k, msg)

    def sub(self, k: str, data: Any) -> _Table:
        return _Table(self.file, self.key(k), data, self.errors)

    def _get(self, k: str, required: bool) -> Any:
        self.used.add(k)
        if k not in self.data:
            if required:
                self.fail(k, "is required but missing")
            return None
        return self.data[k]

    def typed(self, k: str, kind: type | tuple[type, ...], default: Any, what: str, required: bool = False) -> Any:
        v = self._get(k, required)
        if v is None:
            return default
        if (isinstance(v, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))) or not isinstance(
            v, kind
        ):
            self.complain(k, f"expected {what}, got {v!r}")
            return default
        return v

    def string(self, k: str, default: str = "", required: bool = False, choices: tuple[str, ...] = ()) -> str:
        v = self.typed(k, str, default, "a string", required)
        if choices and v not in choices:
            self.complain(k, f"expected one of {', '.join(choices)}, got {v!r}")
            return default
        return v  # type: ignore[no-any-return]

    def boolean(self, k: str, default: bool) -> bool:
        return self.typed(k, bool, default, "true or false")

    def integer(self, k: str, default: int, minimum: int = 0) -> int:
        v = self.typed(k, int, default, "an integer")
        if v < minimum:
            self.complain(k, f"expected an integer >= {minimum}, got {v}")
            return default
        return v  # type: ignore[no-any-return]

    def _convert(self, k: str, default: Any, parse: Callable[[Any], Any], what: str, required: bool) -> Any:
        v = self._get(k, required)
        if v is None:
            return default
        try:
            return parse(v)
        except (ValueError, TypeError):
            self.complain(k, f"expected {what}, got {v!r}")
            return default

    def duration(self, k: str, default: float | None, required: bool = False) -> Any:
        return self._convert(k, default, parse_duration, 'a duration such as "90s", "5m" or 120', required)

    def size(self, k: str, default: int, minimum: int = 0) -> int:
        v = self._convert(k, default, parse_size, 'a size such as "64MiB" or "1GB"', False)
        if v < minimum:
            self.complain(k, f"expected at least {minimum} bytes, got {v}")
            return default
        return v  # type: ignore[no-any-return]

    def path(self, k: str, default: Path | None = None, required: bool = False) -> Any:
        v = self.typed(k, str, None, "a path", required)
        if v is None or v == "":
            if required:
                self.fail(k, "is required and must not be empty")
            return default
        p = Path(v).expanduser()
        return p if p.is_absolute() else (self.file.parent / p).resolve()

    def str_list(self, k: str) -> tuple[str, ...]:
        v = self.typed(k, list, [], "a list of strings")
        if not all(isinstance(x, str) for x in v):
            self.complain(k, f"expected a list of strings, got {v!r}")
            return ()
        return tuple(v)

    def finish(self) -> None:
        known = ", ".join(sorted(self.used))
        for k in sorted(set(self.data) - self.used):
            with contextlib.suppress(_Invalid):
                self.fail(k, f"unknown key (known keys here: {known})")


def _url(t: _Table, k: str, default: str, allow_empty: bool = False) -> str:
    v = t.string(k, default)
    if allow_empty and v == "":
        return v
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        t.fail(k, f"expected an http(s) URL such as https://api.gencove.com, got {v!r}")
    return v.rstrip("/")


def _gencove(t: _Table) -> GencoveConfig:
    d = GencoveConfig()
    cfg = GencoveConfig(
        host=_url(t, "host", d.host),
        api_key_file=t.path("api_key_file"),
        s3_endpoint_url=_url(t, "s3_endpoint_url", "", allow_empty=True),
        s3_region=t.string("s3_region", d.s3_region),
        s3_checksums=t.string("s3_checksums", d.s3_checksums, choices=("when_supported", "when_required")),
        request_timeout=t.duration("request_timeout", d.request_timeout),
    )
    t.finish()
    return cfg


def _upload(t: _Table) -> UploadConfig:
    d = UploadConfig()
    cfg = UploadConfig(
        concurrency=t.integer("concurrency", d.concurrency, minimum=1),
        max_objects=t.integer("max_objects", d.max_objects, minimum=1),
        max_bytes_in_flight=t.size("max_bytes_in_flight", d.max_bytes_in_flight, minimum=5 * 1024**2),
        part_size=t.size("part_size", d.part_size, minimum=5 * 1024**2),
        single_put_max=t.size("single_put_max", d.single_put_max, minimum=0),
        retry_deadline=t.duration("retry_deadline", d.retry_deadline),
        assign_deadline=t.duration("assign_deadline", d.assign_deadline),
    )
    t.finish()
    if cfg.max_bytes_in_flight < cfg.part_size:
        t.fail("max_bytes_in_flight", f"must be at least part_size ({cfg.part_size} bytes)")
    if cfg.single_put_max > SINGLE_PUT_LIMIT:
        t.fail("single_put_max", f"must be at most 5GiB (S3's limit for one PutObject), not {cfg.single_put_max} bytes")
    return cfg


def normalise_destination(value: str) -> str:
    """`gncv://folder/sub/` -> `gncv://folder/sub`; raises ValueError when it is not a gncv path."""
    if not value.startswith("gncv://") or value.rstrip("/") == "gncv:":
        raise ValueError(f"expected a gncv:// folder such as gncv://novaseq1, got {value!r}")
    return value.rstrip("/")


def _watch(t: _Table) -> WatchConfig:
    d = WatchConfig(path=Path("/"), destination="gncv://x")
    dest = t.string("destination", required=True)
    try:
        dest = normalise_destination(dest)
    except ValueError as e:
        t.fail("destination", str(e))
    metadata = t.typed("metadata", (dict, list, str, int, float), None, "a table, list or value")
    cfg = WatchConfig(
        path=t.path("path", required=True),
        destination=dest,
        project_id=t.string("project_id", "") or None,
        settle_seconds=t.duration("settle_seconds", d.settle_seconds),
        completion=t.string("completion", d.completion, choices=("auto", "markers", "quiet")),
        quiet_seconds=t.duration("quiet_seconds", None),
        markers=t.str_list("markers"),
        single_end=t.boolean("single_end", d.single_end),
        include_index_reads=t.boolean("include_index_reads", d.include_index_reads),
        include_undetermined=t.boolean("include_undetermined", d.include_undetermined),
        client_id_policy=t.string("client_id_policy", d.client_id_policy, choices=("replace", "reject")),
        rescan_interval=t.duration("rescan_interval", d.rescan_interval),
        use_inotify=t.boolean("use_inotify", d.use_inotify),
        metadata=json.loads(json.dumps(metadata)) if metadata is not None else None,
        allow_outside_root=t.boolean("allow_outside_root", d.allow_outside_root),
    )
    t.finish()
    if cfg.rescan_interval <= 0:
        t.fail("rescan_interval", "expected a duration greater than 0")
    return cfg


def _projects(t: _Table) -> tuple[ProjectSource, ...]:
    raw = t.typed("projects", list, [], "a list of project ids or tables {id, api, host, api_key_file}")
    out: list[ProjectSource] = []
    for i, item in enumerate(raw, start=1):
        key = f"projects[{i}]"
        if isinstance(item, str):
            if not item:
                t.fail(key, "expected a project id, got an empty string")
            out.append(ProjectSource(id=item))
            continue
        if not isinstance(item, dict):
            t.fail(key, f"expected a project id or a table {{id, api, host, api_key_file}}, got {item!r}")
        sub = t.sub(key, item)
        pid = sub.typed("id", (str, int), None, "a project id (string or integer)", required=True)
        src = ProjectSource(
            id=str(pid),
            api=sub.string("api", "v2", choices=API_KINDS),
            host=_url(sub, "host", "", allow_empty=True),
            api_key_file=sub.path("api_key_file"),
        )
        sub.finish()
        out.append(src)
    ids = [(p.api, p.host, p.id) for p in out]
    if len(set(ids)) != len(ids):
        t.fail("projects", "lists the same project twice")
    return tuple(out)


def _download(t: _Table) -> DownloadConfig:
    d = DownloadConfig()
    template = t.string("template", d.template)
    try:
        check_template(template)
    except ValueError as e:
        t.fail("template", str(e))
    cfg = DownloadConfig(
        destination=t.path("destination"),
        projects=_projects(t),
        template=template,
        file_types=t.str_list("file_types"),
        interval=t.duration("interval", d.interval),
        include_failed=t.boolean("include_failed", d.include_failed),
        auto_restore=t.boolean("auto_restore", d.auto_restore),
        concurrency=t.integer("concurrency", d.concurrency, minimum=1),
        max_bytes_in_flight=t.size("max_bytes_in_flight", d.max_bytes_in_flight, minimum=1024**2),
        webhook_secret_file=t.path("webhook_secret_file"),
        webhook_tolerance=t.duration("webhook_tolerance", d.webhook_tolerance),
        marker=t.string("marker", d.marker),
        recheck_interval=t.duration("recheck_interval", d.recheck_interval),
        full_relist_interval=t.duration("full_relist_interval", d.full_relist_interval),
    )
    t.finish()
    if cfg.projects and cfg.destination is None:
        t.fail("destination", "is required when projects are listed")
    if cfg.interval <= 0:
        t.fail("interval", "expected a duration greater than 0")
    for key in ("recheck_interval", "full_relist_interval"):
        if getattr(cfg, key) < 0:
            t.fail(key, "expected a duration of 0 (off) or more")
    if cfg.marker and (cfg.marker in (".", "..") or "/" in cfg.marker or "\\" in cfg.marker):
        t.fail("marker", f"expected a file name in the destination folder, got {cfg.marker!r}")
    return cfg


def _metrics(t: _Table) -> MetricsConfig:
    cfg = MetricsConfig(listen=t.string("listen", MetricsConfig().listen))
    t.finish()
    try:
        cfg.host_port  # noqa: B018 - validation
    except ValueError:
        t.fail("listen", f"expected host:port such as 127.0.0.1:9464, got {cfg.listen!r}")
    return cfg


def _webhook(t: _Table) -> WebhookConfig:
    cfg = WebhookConfig(listen=t.string("listen", ""))
    t.finish()
    try:
        cfg.host_port  # noqa: B018 - validation
    except ValueError:
        t.fail("listen", f"expected host:port such as 0.0.0.0:9465, got {cfg.listen!r}")
    return cfg


def _log(t: _Table) -> LogConfig:
    cfg = LogConfig(
        level=t.string("level", "info", choices=("debug", "info", "warning", "error")),
        format=t.string("format", "kv", choices=("kv", "json")),
    )
    t.finish()
    return cfg


def _network(t: _Table) -> NetworkConfig:
    cfg = NetworkConfig(
        proxy=_url(t, "proxy", "", allow_empty=True),
        no_proxy=t.str_list("no_proxy"),
        ca_file=t.path("ca_file"),
    )
    if cfg.ca_file is not None and not cfg.ca_file.is_file():
        t.fail("ca_file", f"{cfg.ca_file} is not a readable file")
    t.finish()
    return cfg


def _service(t: _Table) -> ServiceConfig:
    d = ServiceConfig()
    cfg = ServiceConfig(
        shutdown_grace=t.duration("shutdown_grace", d.shutdown_grace),
        watchdog=t.boolean("watchdog", d.watchdog),
    )
    t.finish()
    return cfg


def parse_config(data: dict[str, Any], file: Path) -> Config:
    """The config, or ConfigErrors naming every bad key of the file at once."""
    errors: list[ConfigError] = []
    top = _Table(file, "", data, errors)

    def read(build: Callable[[_Table], Any], name: str, raw: Any, default: Any) -> Any:
        try:
            return build(top.sub(name, raw)) if raw is not None else default
        except _Invalid:  # recorded; the rest of the file is still read
            return default

    def section(name: str, build: Callable[[_Table], Any], default: Any) -> Any:
        return read(build, name, top._get(name, False), default)

    try:
        watches_raw = top.typed("watch", list, [], "an array of [[watch]] tables")
    except _Invalid:
        watches_raw = []
    found = (read(_watch, f"watch[{i}]", w, None) for i, w in enumerate(watches_raw, start=1))
    watches = tuple(w for w in found if w is not None)
    try:
        state_raw = top._get("state", True)
    except _Invalid:
        state_raw = None
    cfg = Config(
        file=file,
        gencove=section("gencove", _gencove, GencoveConfig()),
        state=read(_state, "state", state_raw, StateConfig()),
        upload=section("upload", _upload, UploadConfig()),
        watches=watches,
        download=section("download", _download, DownloadConfig()),
        metrics=section("metrics", _metrics, MetricsConfig()),
        log=section("log", _log, LogConfig()),
        service=section("service", _service, ServiceConfig()),
        network=section("network", _network, NetworkConfig()),
        webhook=section("webhook", _webhook, WebhookConfig()),
    )
    top.finish()
    paths = [w.path for w in watches]
    if len(set(paths)) != len(paths):
        errors.append(ConfigError(str(file), "watch", "the same path is watched twice"))
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    return cfg


def _state(t: _Table) -> StateConfig:
    cfg = StateConfig(path=t.path("path", required=True))
    t.finish()
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    file = Path(path).expanduser().resolve()
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(file), "", "config file not found") from None
    except OSError as e:
        raise ConfigError(str(file), "", f"cannot read config file: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(file), "", "config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(file), "", f"not valid TOML: {e}") from None
    return parse_config(data, file)


def resolve_api_key(cfg: Config, key_file: Path | None = None) -> str:
    """The API key: `api_key_file`, else the systemd credential, else $TRANSFERD_API_KEY.

    The value is registered with the log redactor before it is returned.
    """
    from transferd.log import register_secret

    key_file = key_file or cfg.gencove.api_key_file
    if key_file is None:
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if cred_dir and (Path(cred_dir) / API_KEY_CREDENTIAL).is_file():
            key_file = Path(cred_dir) / API_KEY_CREDENTIAL
    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(str(cfg.file), "gencove.api_key_file", f"cannot read {key_file}: {e.strerror}") from None
        if not key:
            raise ConfigError(str(cfg.file), "gencove.api_key_file", f"{key_file} is empty")
    else:
        key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            raise ConfigError(
                str(cfg.file), "gencove.api_key_file", f"no API key: set gencove.api_key_file or ${API_KEY_ENV}"
            )
    register_secret(key)
    return key


def describe(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data, secrets masked (for `check-config`)."""

    def plain(v: Any) -> Any:
        if is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    doc = plain(cfg)
    doc["file"] = str(cfg.file)
    try:
        key = resolve_api_key(cfg)
        source = str(cfg.gencove.api_key_file) if cfg.gencove.api_key_file else "environment or credential"
        doc["gencove"]["api_key"] = f"*** ({len(key)} characters, from {source})"
    except ConfigError as e:
        if cfg.gencove.api_key_file is not None:
            raise
        doc["gencove"]["api_key"] = f"(not set: {e})"
    return doc
