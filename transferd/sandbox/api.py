"""The Gencove REST API v2 routes (see shared/gencove-api.md), plus the middleware every API call passes:
request log, fault injection, authentication and JSON errors. Paths work with and without a trailing slash.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from transferd.sandbox import lifecycle, render
from transferd.sandbox.faults import FaultRule
from transferd.sandbox.reqlog import Stopwatch, peer_of
from transferd.sandbox.state import DELETED_PATH_MESSAGE, Invalid, NotFound, new_id, validate_destination

if TYPE_CHECKING:
    from transferd.sandbox.runtime import Sandbox

log = logging.getLogger("transferd.sandbox")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HUB: web.AppKey[Sandbox] = web.AppKey("sandbox")
API_PREFIX = "/api/v2/"
NO_AUTH_ENDPOINTS = frozenset({"jwt-create", "jwt-refresh"})
UNAUTHORIZED = {
    "detail": "Given token not valid for any token type",
    "code": "token_not_valid",
    "messages": [{"token_class": "AccessToken", "token_type": "access", "message": "Token is invalid or expired"}],
}
S = "{slash:/?}"  # optional trailing slash


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json", headers=headers)


def not_found() -> web.Response:
    return json_response({"detail": "Not found."}, 404)


def endpoint_of(path: str) -> str:
    """The first path segment after /api/v2/, e.g. "sample-sheet" or "project-samples"."""
    return path[len(API_PREFIX) :].split("/", 1)[0] if path.startswith(API_PREFIX) else ""


def authorized(request: web.Request, hub: Sandbox) -> bool:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    if scheme == "Api-Key":
        return credential == hub.config.api_key
    if scheme == "Bearer":
        return credential in hub.state.access_tokens
    return False


def fault_response(rule: FaultRule, hub: Sandbox) -> web.Response:
    assert rule.status is not None
    headers = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else None
    body: dict[str, Any]
    if rule.status == 503 and rule.maintenance:
        eta = (hub.now() + timedelta(minutes=5)).isoformat()
        body = {
            "maintenance": True,
            "maintenance_message": rule.message or "Gencove is under maintenance.",
            "maintenance_eta": eta,
        }
    elif rule.status == 429:
        wait = f"{rule.retry_after:g}" if rule.retry_after is not None else "1"
        body = {"detail": rule.message or f"Request was throttled. Expected available in {wait} seconds."}
    elif rule.status >= 500:
        body = {"detail": rule.message or "Server Error"}
    else:
        body = {"detail": rule.message or "Injected fault."}
    return json_response(body, rule.status, headers)


async def read_json(request: web.Request) -> Any:
    if not request.body_exists:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise Invalid({"detail": [f"JSON parse error - {exc}"]}) from None


def _errors(exc: Invalid) -> Any:
    # DRF sends {"detail": "..."} as a plain string, field errors as lists.
    if set(exc.errors) == {"detail"}:
        return {"detail": exc.errors["detail"][0]}
    return exc.errors


def _stuck(response: web.StreamResponse, request: web.Request) -> web.StreamResponse:
    """A listing page whose `meta.next` is the page itself: a client that follows it blindly never ends."""
    if not isinstance(response, web.Response) or response.status != 200 or response.body is None:
        return response
    try:
        doc = json.loads(bytes(response.body))  # type: ignore[arg-type]
    except ValueError:
        return response
    if not isinstance(doc, dict) or not isinstance(doc.get("meta"), dict):
        return response
    doc["meta"]["next"] = str(request.url)
    return json_response(doc, 200)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    hub = request.app[HUB]
    watch = Stopwatch()
    endpoint = endpoint_of(request.path)
    status = 500
    sent = 0
    fault: str | None = None
    try:
        effect = hub.faults.take_api(request.method, endpoint, request.path)
        fault = effect.description
        if effect.latency:
            await asyncio.sleep(effect.latency)
        if effect.rule is not None and effect.rule.status is not None:
            response: web.StreamResponse = fault_response(effect.rule, hub)
        elif endpoint not in NO_AUTH_ENDPOINTS and not authorized(request, hub):
            response = json_response(UNAUTHORIZED, 401)
        else:
            response = await call_json(handler, request)
            if effect.rule is not None and effect.rule.stuck_next:
                response = _stuck(response, request)
        status = response.status
        if isinstance(response, web.Response) and response.body is not None:
            sent = len(response.body)  # type: ignore[arg-type]
        return response
    finally:
        hub.log.add(
            target="api",
            method=request.method,
            path=request.path,
            query={k: v for k, v in request.query.items()},
            status=status,
            bytes_in=request.content_length or 0,
            bytes_out=sent,
            duration=watch.elapsed(),
            endpoint=endpoint,
            fault=fault,
            peer=peer_of(request),
        )


async def call_json(handler: Handler, request: web.Request) -> web.StreamResponse:
    """Run a handler, turning state errors and aiohttp's own 404/405 into JSON bodies."""
    try:
        return await handler(request)
    except NotFound:
        return not_found()
    except Invalid as exc:
        return json_response(_errors(exc), 400)
    except web.HTTPMethodNotAllowed:
        return json_response({"detail": f'Method "{request.method}" not allowed.'}, 405)
    except web.HTTPNotFound:
        return not_found()


# -- auth -------------------------------------------------------------------------------------------
async def jwt_create(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = await read_json(request)
    missing = {k: ["This field is required."] for k in ("email", "password") if not (body or {}).get(k)}
    if missing:
        raise Invalid(missing)
    access, refresh = hub.state.issue_jwt()
    return json_response({"refresh": refresh, "access": access})


async def jwt_refresh(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = await read_json(request)
    access = hub.state.refresh_jwt((body or {}).get("refresh"))
    if access is None:
        return json_response({"detail": "Token is invalid or expired", "code": "token_not_valid"}, 401)
    return json_response({"access": access})


# -- upload -----------------------------------------------------------------------------------------
async def upload_credentials(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    creds = hub.state.issue_credentials(hub.now(), hub.credentials_ttl())
    return json_response(
        {
            "version": 1,
            "access_key": creds.access_key,
            "secret_key": creds.secret_key,
            "token": creds.token,
            "expiry_time": creds.expiry.isoformat(),
        },
        201,
    )


async def uploads_post_data(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = await read_json(request)
    path = validate_destination((body or {}).get("destination_path"))
    if hub.faults.path_deleted(path):
        raise Invalid({"destination_path": [DELETED_PATH_MESSAGE.format(path=path)]})
    upload = hub.state.post_upload(path, hub.now())
    upload = (await hub.refresh_uploads([upload]))[0]
    return json_response(render.upload(upload), 201)


async def uploads_url(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = await read_json(request) or {}
    path = validate_destination(body.get("destination_path"))
    source_url = body.get("source_url")
    if not isinstance(source_url, str) or not source_url.startswith(("http://", "https://")):
        raise Invalid({"source_url": ["Enter a valid URL."]})
    if hub.faults.path_deleted(path):
        raise Invalid({"destination_path": [DELETED_PATH_MESSAGE.format(path=path)]})
    upload = hub.state.post_upload(path, hub.now(), source_url=source_url)
    if upload.last_status.status != "succeeded":
        # The real service fetches the URL later; the sandbox stands in a tiny placeholder object.
        await hub.store.put(upload.bucket, upload.key, b"")
        upload = hub.state.mark_upload_succeeded(upload.id, hub.now())
    return json_response(render.upload(upload), 201)


async def uploads_list(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    query = dict(request.query)
    await hub.refresh_uploads(hub.state.started_uploads())
    search, wanted = query.get("search", ""), query.get("status", "all")
    found = [
        u
        for u in hub.state.uploads.values()
        if search in u.destination_path and wanted in ("", "all", u.last_status.status)
    ]
    found.sort(key=lambda u: u.created, reverse=query.get("sort_order", "desc") != "asc")
    return json_response(render.page(request.url, query, found, render.upload))


async def sample_sheet(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    query = dict(request.query)
    search = query.get("search", "")
    await hub.refresh_uploads([u for u in hub.state.started_uploads() if search in u.destination_path])
    entries = hub.state.sample_sheet(search=search, status=query.get("status", "all"))
    sort_by = query.get("sort_by", "created")
    entries.sort(
        key=lambda e: (e.modified if sort_by == "modified" else e.created, e.client_id),
        reverse=query.get("sort_order", "desc") != "asc",
    )
    return json_response(render.page(request.url, query, entries, render.sheet_entry))


async def assign_samples(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    project_id = request.match_info["project_id"]
    hub.state.project(project_id)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise Invalid({"uploads": ["This field is required."]})
    metadata = body.get("metadata")
    assigned = hub.state.assign(project_id, body.get("uploads"), metadata, hub.now())
    for item in assigned:
        lifecycle.start_sample(hub, item.sample.id)
    uploads = [
        {
            "client_id": item.client_id,
            "fastq": {"r1": {"upload": item.r1}, "r2": {"upload": item.r2} if item.r2 else None},
            "sample": item.sample.id,
        }
        for item in assigned
    ]
    return json_response({"uploads": uploads, "metadata": metadata}, 201)


# -- samples and files ------------------------------------------------------------------------------
async def project_samples(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    query = dict(request.query)
    samples = hub.state.project_samples(
        request.match_info["project_id"],
        status=query.get("status", "all"),
        archive_status=query.get("archive_status", "all"),
        search=query.get("search", ""),
        hidden_status=query.get("hidden_status", "visible"),
        sort_by=query.get("sort_by", "created"),
        sort_order=query.get("sort_order", "desc"),
    )
    return json_response(render.page(request.url, query, samples, render.sample))


async def sample_detail(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    sample = hub.state.sample(request.match_info["sample_id"])
    ttl = hub.url_ttl()
    available = sample.downloadable
    return json_response(render.sample_detail(sample, lambda f: hub.signer.sign(f, ttl) if available else None))


async def file_types(request: web.Request) -> web.Response:
    query = dict(request.query)
    types = [{"key": key, "description": text} for key, text in render.FILE_TYPES]
    return json_response(render.page(request.url, query, types, lambda t: t))


async def quality_controls(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    sample = hub.state.sample(request.match_info["sample_id"])
    items = render.quality_controls(sample) if sample.has_deliverables else []
    return json_response(render.page(request.url, dict(request.query), items, lambda q: q))


async def sample_metadata(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    sample_id = request.match_info["sample_id"]
    if request.method == "POST":
        body = await read_json(request)
        if not isinstance(body, dict) or "metadata" not in body:
            raise Invalid({"metadata": ["This field is required."]})
        sample = hub.state.set_metadata(sample_id, body["metadata"])
        return json_response({"metadata": sample.metadata})
    return json_response({"metadata": hub.state.sample(sample_id).metadata})


async def file_checksum(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    _, sample_file = hub.state.file(request.match_info["file_id"])
    if not sample_file.checksum_sha256:
        return json_response({"detail": "File does not have checksum."}, 400)
    filename = request.query.get("filename") or sample_file.filename
    return web.Response(
        text=f"{sample_file.checksum_sha256} *{filename}\n",
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}.sha256"'},
    )


async def restore_samples(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    project_id = request.match_info["project_id"]
    body = await read_json(request)
    ids = hub.state.restorable(project_id, (body or {}).get("sample_ids") if isinstance(body, dict) else None)
    lifecycle.request_restore(hub, ids)
    return json_response({"restore_group_id": new_id(), "created": hub.now().isoformat()}, 202)


# -- projects ---------------------------------------------------------------------------------------
def _project_json(hub: Sandbox, project_id: str) -> dict[str, Any]:
    project = hub.state.project(project_id)
    subscription = hub.state.subscriptions.get(project_id)
    return render.project(
        project,
        hub.state.organization_id,
        hub.state.sample_count(project_id),
        subscription.url if subscription else "",
    )


async def projects_list(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    query = dict(request.query)
    projects = (
        []
        if query.get("hidden_status") == "hidden"
        else sorted(hub.state.projects.values(), key=lambda p: p.created, reverse=True)
    )
    return json_response(render.page(request.url, query, projects, lambda p: _project_json(hub, p.id)))


async def project_detail(request: web.Request) -> web.Response:
    return json_response(_project_json(request.app[HUB], request.match_info["project_id"]))


async def pipeline_capabilities(request: web.Request) -> web.Response:
    query = dict(request.query)
    wanted = [x for x in query.get("search", "").split(",") if x]
    items = [render.PIPELINE_CAPABILITY] if not wanted or render.PIPELINE_CAPABILITY["id"] in wanted else []
    return json_response(render.page(request.url, query, items, lambda c: c))


def add_routes(app: web.Application) -> None:
    r = app.router
    v2 = API_PREFIX.rstrip("/")
    r.add_post(f"{v2}/jwt-create{S}", jwt_create)
    r.add_post(f"{v2}/jwt-refresh{S}", jwt_refresh)
    r.add_post(f"{v2}/upload-credentials{S}", upload_credentials)
    r.add_post(f"{v2}/uploads-post-data{S}", uploads_post_data)
    r.add_post(f"{v2}/uploads-url{S}", uploads_url)
    r.add_get(f"{v2}/uploads{S}", uploads_list)
    r.add_get(f"{v2}/sample-sheet{S}", sample_sheet)
    r.add_post(f"{v2}/project-samples/{{project_id}}{S}", assign_samples)
    r.add_get(f"{v2}/project-samples/{{project_id}}{S}", project_samples)
    r.add_get(f"{v2}/samples/{{sample_id}}{S}", sample_detail)
    r.add_get(f"{v2}/file-types{S}", file_types)
    r.add_get(f"{v2}/sample-quality-controls/{{sample_id}}{S}", quality_controls)
    r.add_get(f"{v2}/sample-metadata/{{sample_id}}{S}", sample_metadata)
    r.add_post(f"{v2}/sample-metadata/{{sample_id}}{S}", sample_metadata)
    r.add_get(f"{v2}/files/{{file_id:[^/]+}}.sha256{S}", file_checksum)
    r.add_post(f"{v2}/project-restore-samples/{{project_id}}{S}", restore_samples)
    r.add_get(f"{v2}/projects{S}", projects_list)
    r.add_get(f"{v2}/projects/{{project_id}}{S}", project_detail)
    r.add_get(f"{v2}/pipeline-capabilities{S}", pipeline_capabilities)
