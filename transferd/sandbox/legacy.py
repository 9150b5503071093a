"""Gencove's legacy REST API (rest.gencove.com) in the sandbox, on the API's port: projects/samples and
apps/members, both backed by the sandbox's own projects, samples and S3.

A legacy project or app is a *view* of one sandbox project, made with the control API (below). Ids are integers
derived from the sandbox's UUIDs (`legacy_id`): stable for as long as the sample or project exists. A sample's
external id is its client_id unless the control API gave it another (external ids need not be unique). raw-data
URLs are the sandbox's signed download URLs (each raw-data call uses one `url_ttl` fault), so download faults and
expiry behave as for v2; files are named the legacy way (`<legacy id>_R1.fastq.gz`, `<legacy id>.vcf.gz`), and
`url_s3` aliases the VCF, signed on its own (same object, another query string).

Auth, as the legacy Gencove CLI did it: `POST /login {"email", "password"}` (LEGACY_EMAIL and the sandbox's API
key) -> `refresh_token`; `POST /auth {"refresh_token"}` -> `access_token`, an HS256 JWT valid `jwt_ttl` seconds.
Authorised calls take `Authorization: JWT <token>` or `GENCOVE-API-KEY <key>`; `/` and `/health` are open;
`/welcome-api-key` takes the key only. Answers are JSON with `message` and `message_details`.

Every call is logged (target "api", endpoint "legacy-...", `extra.auth`: the scheme used, `extra.ids`: what a
raw-data call asked for) and passes the API fault rules (match them by path regex, e.g. "/raw-data").

Control (the /_sandbox auth and error handling apply):
  GET  /_sandbox/legacy                {"email", "jwt_ttl", "views"}
  POST /_sandbox/legacy                {"jwt_ttl"?, "rotate"?: true (access tokens die), "logout"?: true (refresh too)}
  POST /_sandbox/legacy/views          {"project_id", "kind": "projects"|"apps", "name"?, "webhook_url"?}
  POST /_sandbox/legacy/external-ids   {"sample_id", "external_id"}
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from transferd.sandbox.api import HUB, Handler, S, fault_response, json_response, read_json
from transferd.sandbox.reqlog import Stopwatch
from transferd.sandbox.state import Invalid, NotFound, Sample, SampleFile, SandboxState

if TYPE_CHECKING:
    from transferd.sandbox.runtime import Sandbox

LEGACY_EMAIL = "sandbox@transferd.invalid"
EXTRA = "transferd.legacy.log_extra"
PROJECT_FIELDS = (
    "fastq_r1_url_s3", "fastq_r2_url_s3", "bam_url_s3", "bai_url_s3", "fastq_nongrch37_url_s3", "ancestry_url_s3",
    "microbiome_url_s3", "vcf_url_s3", "tbi_url_s3", "csi_url_s3", "snp_url_s3", "traits_url_s3",
)  # fmt: skip
URL_FIELD = {"fastq-r1": "fastq_r1_url_s3", "fastq-r2": "fastq_r2_url_s3", "impute-vcf": "vcf_url_s3",
             "impute-vcf-tbi": "tbi_url_s3"}  # fmt: skip
TRAIT_DESCRIPTIONS = {"height_percentile": "Predicted adult height percentile",
                      "lactose_tolerance": "Likelihood of lactose tolerance"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Kind:
    groups: str  # "projects" | "apps"
    group: str
    members: str  # "samples" | "members"
    member: str
    full: bool  # projects: fastq and trait fields, bulk orders; apps: neither

    @property
    def ids_key(self) -> str:
        return f"{self.member}_ids"

    @property
    def fields(self) -> tuple[str, ...]:
        return PROJECT_FIELDS if self.full else tuple(f for f in PROJECT_FIELDS if not f.startswith(("fastq", "trait")))


KINDS = {k.groups: k for k in (Kind("projects", "project", "samples", "sample", True),
                               Kind("apps", "app", "members", "member", False))}  # fmt: skip


@dataclass(frozen=True, slots=True)
class View:
    kind: str
    id: int
    project_id: str  # the sandbox project behind it
    name: str
    created: datetime
    webhook_url: str | None = None


@dataclass(slots=True)
class LegacyState:
    """Belongs to one `SandboxState`: a reset (which replaces that) starts a fresh one."""

    state: SandboxState
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    jwt_ttl: float = 3600.0
    views: dict[tuple[str, int], View] = field(default_factory=dict)
    external_ids: dict[str, str] = field(default_factory=dict)  # sample UUID -> external id
    refresh_tokens: set[str] = field(default_factory=set)


class LegacyBook:
    def __init__(self) -> None:
        self._current: LegacyState | None = None

    def current(self, hub: Sandbox) -> LegacyState:
        if self._current is None or self._current.state is not hub.state:
            self._current = LegacyState(hub.state)
        return self._current


LEGACY: web.AppKey[LegacyBook] = web.AppKey("legacy", LegacyBook)
Route = Callable[[web.Request, "Sandbox", LegacyState], Awaitable[web.Response]]


def legacy_id(uuid_text: str) -> int:
    """A stable integer id for a sandbox UUID (48 bits: exact in JSON, collisions improbable)."""
    return int(uuid_text.replace("-", "")[:12], 16)


def legacy_date(value: datetime) -> dict[str, int]:
    v = value.astimezone(UTC)
    return {"year": v.year, "month": v.month, "day": v.day, "hour": v.hour, "minute": v.minute, "second": v.second}


def message(status: int, text: str, details: Any = "", **body: Any) -> web.Response:
    return json_response({"message": text, "message_details": details, **body}, status)


# -- JWT (HS256) --------------------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(secret: bytes, claims: dict[str, Any]) -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def jwt_valid(secret: bytes, token: str, now: float) -> bool:
    parts = token.split(".")
    if len(parts) != 3:
        return False
    expected = _b64(hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, parts[2]):
        return False
    try:
        claims = json.loads(_unb64(parts[1]))
    except ValueError:
        return False
    return claims.get("type") == "access" and float(claims.get("exp", 0)) > now


def _scheme(request: web.Request, hub: Sandbox, world: LegacyState, auth: str) -> str | None:
    """The auth scheme that let the request in ("" for open routes), or None when refused."""
    if auth == "open":
        return ""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    if scheme == "GENCOVE-API-KEY" and hmac.compare_digest(credential, hub.config.api_key):
        return scheme
    if auth == "any" and scheme == "JWT" and jwt_valid(world.secret, credential, time.time()):
        return scheme
    return None


# -- the route wrapper: log, faults, auth, JSON errors ---------------------------------------------------------------
def _route(endpoint: str, fn: Route, auth: str = "any") -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        hub = request.app[HUB]
        world = request.app[LEGACY].current(hub)
        watch, status, sent, fault = Stopwatch(), 500, 0, None
        extra: dict[str, str] = {}
        request[EXTRA] = extra
        try:
            effect = hub.faults.take_api(request.method, endpoint, request.path)
            fault = effect.description
            if effect.latency:
                await asyncio.sleep(effect.latency)
            if effect.rule is not None and effect.rule.status is not None:
                response = fault_response(effect.rule, hub)
            elif (scheme := _scheme(request, hub, world, auth)) is None:
                response = message(401, "Unauthorized", "Send Authorization: JWT <access token> or GENCOVE-API-KEY")
            else:
                if scheme:
                    extra["auth"] = scheme
                response = await _answer(fn, request, hub, world)
            status = response.status
            sent = len(response.body) if isinstance(response.body, bytes) else 0
            return response
        finally:
            hub.log.add(
                target="api", method=request.method, path=request.path, query=dict(request.query), status=status,
                bytes_in=request.content_length or 0, bytes_out=sent, duration=watch.elapsed(), endpoint=endpoint,
                fault=fault, extra=extra,
            )  # fmt: skip

    return handler


async def _answer(fn: Route, request: web.Request, hub: Sandbox, world: LegacyState) -> web.Response:
    try:
        return await fn(request, hub, world)
    except NotFound as exc:
        return message(404, "Not found", f"{exc} does not exist or is not yours")
    except Invalid as exc:
        return message(400, "Bad request", exc.errors)


# -- misc and auth --------------------------------------------------------------------------------------------------
async def root(request: web.Request, hub: Sandbox, world: LegacyState) -> web.Response:
    return message(200, "Gencove REST API (transferd sandbox)", "legacy projects/samples and apps/members")


async def health(request: web.Request, hub: Sandbox, world: LegacyState) -> web.Response:
    return message(200, "OK", "The backend is healthy")


async def welcome(request: web.Request, hub: Sandbox, world: LegacyState) -> web.Response:
    return message(200, "Welcome! Your API key works.", "GENCOVE-API-KEY accepted")


async def login(request: web.Request, hub: Sandbox, world: LegacyState) -> web.Response:
    body = await read_json(request)
    body = body if isinstance(body, dict) else {}
    email, password = body.get("email"), body.get("password")
    if email != LEGACY_EMAIL or not isinstance(password, str) or not hmac.compare_digest(password, hub.config.api_key):
        return message(401, "Invalid credentials", "Unknown email or wrong password")
    token = secrets.token_urlsafe(32)
    world.refresh_tokens.add(token)
    return message(200, "Logged in", "Use the refresh token with POST /auth", refresh_token=token)


async def auth(request: web.Request, hub: Sandbox, world: LegacyState) -> web.Response:
    body = await read_json(request)
    token = body.get("refresh_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or token not in world.refresh_tokens:
        return message(401, "Invalid refresh token", "Log in again")
    now = time.time()
    access = make_jwt(world.secret, {"sub": LEGACY_EMAIL, "type": "access", "iat": int(now),
                                     "exp": now + world.jwt_ttl, "jti": secrets.token_hex(8)})  # fmt: skip
    return message(200, "Authenticated", "Send Authorization: JWT <access_token>", access_token=access)


# -- projects and apps -------------------------------------------------------------------------------------------------
def _view(hub: Sandbox, world: LegacyState, kind: Kind, group_id: str) -> View:
    view = world.views.get((kind.groups, int(group_id)))
    if view is None or view.project_id not in hub.state.projects:
        raise NotFound(f"{kind.group} {group_id}")
    return view


def _samples(hub: Sandbox, view: View) -> list[Sample]:
    return sorted((s for s in hub.state.samples.values() if s.project_id == view.project_id), key=lambda s: s.created)


def _external(world: LegacyState, sample: Sample) -> str:
    return world.external_ids.get(sample.id, sample.client_id)


def _member(hub: Sandbox, view: View, kind: Kind, member_id: str) -> Sample:
    wanted = int(member_id)
    for s in _samples(hub, view):
        if legacy_id(s.id) == wanted:
            return s
    raise NotFound(f"{kind.member} {member_id}")


def _group_json(hub: Sandbox, kind: Kind, view: View) -> dict[str, Any]:
    return {"id": view.id, "name": view.name, "description": "", "webhook_url": view.webhook_url,
            "created": legacy_date(view.created), f"{kind.member}_count": len(_samples(hub, view))}  # fmt: skip


def _member_json(world: LegacyState, kind: Kind, view: View, s: Sample) -> dict[str, Any]:
    return {"id": legacy_id(s.id), f"{kind.group}_id": view.id, "external_id": _external(world, s),
            "participating": True, "created": legacy_date(s.created)}  # fmt: skip


def _order_json(kind: Kind, view: View, s: Sample) -> dict[str, Any]:
    return {f"{kind.member}_id": legacy_id(s.id), f"{kind.group}_id": view.id, "status": s.last_status.status,
            "created": legacy_date(s.created), "updated": legacy_date(s.last_status.created)}  # fmt: skip


async def list_groups(request: web.Request, hub: Sandbox, world: LegacyState, kind: Kind) -> web.Response:
    views = [v for (k, _), v in world.views.items() if k == kind.groups and v.project_id in hub.state.projects]
    return message(200, "OK", "", **{kind.groups: [_group_json(hub, kind, v) for v in views]})


async def get_group(request: web.Request, hub: Sandbox, world: LegacyState, kind: Kind) -> web.Response:
    view = _view(hub, world, kind, request.match_info["gid"])
    if request.method == "PUT":
        body = await read_json(request)
        body = body if isinstance(body, dict) else {}
        hook = body.get("webhook_url", view.webhook_url)
        if hook not in (None, "") and not (isinstance(hook, str) and hook.startswith(("http://", "https://"))):
            raise Invalid({"webhook_url": ["An http(s) URL or null is expected."]})
        view = replace(view, name=str(body.get("name", view.name)), webhook_url=hook or None)
        world.views[(kind.groups, view.id)] = view
    return message(200, "OK", "", **{kind.group: _group_json(hub, kind, view)})


async def list_members(request: web.Request, hub: Sandbox, world: LegacyState, kind: Kind) -> web.Response:
    view = _view(hub, world, kind, request.match_info["gid"])
    return message(200, "OK", "", **{kind.members: [_member_json(world, kind, view, s) for s in _samples(hub, view)]})


async def get_member(request: web.Request, hub: Sandbox, world: LegacyState, kind: Kind) -> web.Response:
    view = _view(hub, world, kind, request.match_info["gid"])
    s = _member(hub, view, kind, request.match_info["mid"])
    return message(200, "OK", "", **{kind.member: _member_json(world, kind, view, s)})


async def order(request: web.Request, hub: Sandbox, world: LegacyState, kind: Kind) -> web.Response:
    view = _view(hub, world, kind, request.match_info["gid"])
    s = _member(hub, view, kind, request.match_info["mid"])
    return message(200, "OK", "", order=_order_json(kind, view, s))


def _int_list(value: Any, key: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise Invalid({key: ["A list of integer ids is expected."]})
    return list(dict.fromkeys(value))


async def orders(request: web.Request, hub: Sandbox, world: LegacyState, kind: Kind) -> web.Response:
    view = _view(hub, world, kind, request.match_info["gid"])
    body = await read_json(request)
    ids = _int_list(body.get(kind.ids_key) if isinstance(body, dict) else None, kind.ids_key)
    by_id = {legacy_id(s.id): s for s in _samples(hub, view)}
    return message(200, "OK", "", orders=[_order_json(kind, view, by_id[i]) for i in ids if i in by_id])


def _select(kind: Kind, world: LegacyState, body: Any, samples: list[Sample]) -> tuple[list[Sample], str]:
    """raw-data's selection: no ids (or null) means all, `[]` none; ids or external ids, not both."""
    body = body if isinstance(body, dict) else {}
    ids, externals = body.get(kind.ids_key), body.get("external_ids")
    if ids is not None and externals is not None:
        raise Invalid({"detail": [f"Provide either {kind.ids_key} or external_ids, not both."]})
    if ids is None and externals is None:
        return samples, "all"
    if ids is not None:
        by_id = {legacy_id(s.id): s for s in samples}
        wanted = _int_list(ids, kind.ids_key)
        return [by_id[i] for i in wanted if i in by_id], ",".join(map(str, wanted))
    if not isinstance(externals, list) or not all(isinstance(x, str) for x in externals):
        raise Invalid({"external_ids": ["A list of strings is expected."]})
    wanted_externals = set(externals)
    return [s for s in samples if _external(world, s) in wanted_externals], "external:" + ",".join(externals)


def _traits(s: Sample) -> dict[str, Any]:
    digest = hashlib.sha256(s.id.encode()).digest()
    return {"height_percentile": digest[0] % 100, "lactose_tolerance": ("likely", "unlikely")[digest[1] % 2]}


def _raw_row(hub: Sandbox, world: LegacyState, kind: Kind, view: View, s: Sample, ttl: float) -> dict[str, Any]:
    lid = legacy_id(s.id)
    row: dict[str, Any] = {f"{kind.member}_id": lid, "external_id": _external(world, s), f"{kind.group}_id": view.id,
                           "url_s3": None, **dict.fromkeys(kind.fields)}  # fmt: skip
    if kind.full:
        row.update(trait_values=None, ancestry_url_suffix=None)
    if not (s.has_deliverables and s.downloadable):
        return row

    def sign(f: SampleFile, extra: float = 0.0) -> str:
        return hub.signer.sign(replace(f, filename=f.filename.replace(s.id, str(lid))), ttl + extra)

    for f in s.files:
        name = URL_FIELD.get(f.file_type)
        if name in row:
            row[name] = sign(f)
        if f.file_type == "impute-vcf":
            row["url_s3"] = sign(f, 1)  # the alias: the same object, signed on its own
    if kind.full and s.last_status.status.startswith("succeeded"):
        row["trait_values"] = _traits(s)
    return row


async def raw_data(request: web.Request, hub: Sandbox, world: LegacyState, kind: Kind) -> web.Response:
    view = _view(hub, world, kind, request.match_info["gid"])
    chosen, asked = _select(kind, world, await read_json(request), _samples(hub, view))
    request[EXTRA]["ids"] = asked
    ttl = hub.url_ttl()  # one use of a url_ttl fault per call, like one GET samples/{id} in v2
    rows = [_raw_row(hub, world, kind, view, s, ttl) for s in chosen]
    extra = {"trait_descriptions": TRAIT_DESCRIPTIONS} if kind.full else {}
    return message(200, "OK", f"{len(rows)} {kind.members}", raw_data=rows, **extra)


# -- control ----------------------------------------------------------------------------------------------------------
def _world(request: web.Request) -> LegacyState:
    return request.app[LEGACY].current(request.app[HUB])


def _view_json(v: View) -> dict[str, Any]:
    return {"kind": v.kind, "id": v.id, "project_id": v.project_id, "name": v.name, "webhook_url": v.webhook_url}


async def control_info(request: web.Request) -> web.Response:
    world = _world(request)
    if request.method == "POST":
        body = await read_json(request) or {}
        if "jwt_ttl" in body:
            ttl = body["jwt_ttl"]
            if not isinstance(ttl, int | float) or isinstance(ttl, bool):
                raise Invalid({"jwt_ttl": ["A number of seconds is expected."]})
            world.jwt_ttl = float(ttl)
        if body.get("rotate"):
            world.secret = secrets.token_bytes(32)  # every access token issued so far is refused
        if body.get("logout"):
            world.refresh_tokens.clear()  # /auth refuses them too: clients must log in again
    views = [_view_json(v) for v in world.views.values()]
    return json_response({"email": LEGACY_EMAIL, "jwt_ttl": world.jwt_ttl, "views": views})


async def control_view(request: web.Request) -> web.Response:
    hub, world = request.app[HUB], _world(request)
    body = await read_json(request) or {}
    kind, project_id = body.get("kind", "projects"), str(body.get("project_id") or "")
    if kind not in KINDS:
        raise Invalid({"kind": ["Expected projects or apps."]})
    project = hub.state.project(project_id)
    view = View(kind, legacy_id(project.id), project.id, str(body.get("name") or project.name), hub.now(),
                body.get("webhook_url") or None)  # fmt: skip
    world.views[(kind, view.id)] = view
    return json_response(_view_json(view), 201)


async def control_external_id(request: web.Request) -> web.Response:
    hub, world = request.app[HUB], _world(request)
    body = await read_json(request) or {}
    sample = hub.state.sample(str(body.get("sample_id") or ""))
    external = body.get("external_id")
    if not isinstance(external, str) or not external:
        raise Invalid({"external_id": ["A non-empty string is expected."]})
    world.external_ids[sample.id] = external
    return json_response({"sample_id": sample.id, "legacy_id": legacy_id(sample.id), "external_id": external})


def add_routes(app: web.Application) -> None:
    app[LEGACY] = LegacyBook()
    r = app.router
    r.add_get("/", _route("legacy-root", root, "open"))
    r.add_get(f"/health{S}", _route("legacy-health", health, "open"))
    r.add_get(f"/welcome-api-key{S}", _route("legacy-welcome", welcome, "key"))
    r.add_post(f"/login{S}", _route("legacy-login", login, "open"))
    r.add_post(f"/auth{S}", _route("legacy-auth", auth, "open"))
    for kind in KINDS.values():
        group = f"/{kind.groups}/{{gid:\\d+}}"
        member = f"{group}/{kind.members}/{{mid:\\d+}}"

        def route(endpoint: str, fn: Callable[..., Awaitable[web.Response]], k: Kind = kind) -> Handler:
            return _route(f"legacy-{endpoint}", functools.partial(fn, kind=k))

        r.add_get(f"/{kind.groups}{S}", route(kind.groups, list_groups))
        r.add_get(f"{group}{S}", route(kind.group, get_group))
        r.add_put(f"{group}{S}", route(kind.group, get_group))
        r.add_get(f"{group}/{kind.members}{S}", route(kind.members, list_members))
        r.add_get(f"{member}{S}", route(kind.member, get_member))
        r.add_get(f"{member}/order{S}", route("order", order))
        if kind.full:
            r.add_post(f"{group}/{kind.members}/orders{S}", route("orders", orders))
        r.add_post(f"{group}/raw-data{S}", route("raw-data", raw_data))
    r.add_get("/_sandbox/legacy", control_info)
    r.add_post("/_sandbox/legacy", control_info)
    r.add_post("/_sandbox/legacy/views", control_view)
    r.add_post("/_sandbox/legacy/external-ids", control_external_id)
