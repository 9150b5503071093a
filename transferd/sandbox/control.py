"""The test-control HTTP API under `/_sandbox/` (same port and API key as the Gencove API).

| method + path                               | body / query                                   |
|---------------------------------------------|------------------------------------------------|
| GET  /_sandbox/info                         |                                                |
| POST /_sandbox/reset                        |                                                |
| POST /_sandbox/projects                     | {"name", "id"?}                                |
| POST /_sandbox/projects/{id}/samples        | {"client_id", "r1_size", "r2_size", "seed"}    |
| GET/POST/DELETE /_sandbox/faults            | a rule or a list of rules (see faults.py)      |
| GET/DELETE /_sandbox/log                    | ?target&method&path&endpoint&operation&since   |
| GET/POST /_sandbox/settings                 | {"sample_delay", "restore_delay", "url_ttl",   |
|                                             |  "credentials_ttl", "upload_notice_delay"}     |
| POST /_sandbox/failqc                       | {"project_id", "client_id", "fail": true}      |
| POST /_sandbox/archive                      | {"sample_ids": [...]} or {"project_id"}        |
| PUT/DELETE /_sandbox/webhooks/{project_id}  | {"url", "secret"}                              |
| GET  /_sandbox/webhook-deliveries           |                                                |
| GET  /_sandbox/uploads, /_sandbox/assignments, /_sandbox/samples?project_id= |               |
| POST /_sandbox/samples/{id}/status          | {"status", "note"?, "modified"?}               |
| POST /_sandbox/samples/{id}/files           | {"file_type", "filename", "size", "seed"}      |

The matching synchronous client is `control_client.SandboxControl`.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from transferd.sandbox import lifecycle, render
from transferd.sandbox.api import HUB, Handler, authorized, json_response, read_json
from transferd.sandbox.control_client import SandboxControl  # the client of these routes, re-exported
from transferd.sandbox.faults import FaultError, parse_rule
from transferd.sandbox.state import Invalid, NotFound, Sample, SampleFile, Settings, Subscription, Upload, new_id

if TYPE_CHECKING:
    from transferd.sandbox.runtime import Sandbox

PREFIX = "/_sandbox"
__all__ = ["SandboxControl", "add_routes", "control_middleware"]


@web.middleware
async def control_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(PREFIX):
        return await handler(request)
    if not authorized(request, request.app[HUB]):
        return json_response({"detail": "Invalid API key."}, 401)
    try:
        return await handler(request)
    except NotFound as exc:
        return json_response({"detail": f"Not found: {exc}"}, 404)
    except (Invalid, FaultError, ValueError, TypeError) as exc:
        detail = exc.errors if isinstance(exc, Invalid) else str(exc)
        return json_response({"detail": detail}, 400)


def _upload_json(hub: Sandbox, upload: Upload) -> dict[str, Any]:
    return {
        **render.upload(upload),
        "client_id": upload.client_id,
        "read": upload.read,
        "project_id": upload.project_id,
        "sample_id": upload.sample_id,
        "assign_attempts": hub.state.assign_attempts.get(upload.id, 0),
    }


def _sample_json(hub: Sandbox, sample: Sample) -> dict[str, Any]:
    ttl = hub.state.settings.url_ttl  # not hub.url_ttl(): looking must not use up a url_ttl fault
    body = render.sample_detail(sample, lambda f: hub.signer.sign(f, ttl) if sample.downloadable else None)
    for file_json, sample_file in zip(body["files"], sample.files, strict=False):
        file_json.update(bucket=sample_file.bucket, key=sample_file.key, filename=sample_file.filename)
    body.update(
        r1_upload=sample.r1_upload, r2_upload=sample.r2_upload, metadata=sample.metadata, fail_qc=sample.fail_qc
    )
    return body


async def info(request: web.Request) -> web.Response:
    return json_response(asdict(request.app[HUB].info))


async def reset(request: web.Request) -> web.Response:
    await request.app[HUB].reset()
    return json_response({"reset": True})


async def create_project(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = await read_json(request) or {}
    project_id = body.get("id")
    if project_id is not None and project_id in hub.state.projects:
        raise Invalid({"id": [f"Project {project_id} already exists."]})
    project = hub.state.add_project(str(body.get("name") or "sandbox project"), hub.now(), project_id)
    return json_response(render.project(project, hub.state.organization_id, 0), 201)


async def seed_sample(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    project_id = request.match_info["project_id"]
    hub.state.project(project_id)
    body = await read_json(request) or {}
    client_id = str(body.get("client_id") or "")
    if not client_id or "_" in client_id:
        raise Invalid({"client_id": ["A client_id without '_' is required."]})
    sizes = {"R1": int(body.get("r1_size", 1024)), "R2": int(body.get("r2_size", 1024))}
    seed = int(body.get("seed", 0))
    folder = str(body.get("folder") or f"gncv://seeded-{project_id[:8]}/")
    uploads: dict[str, Upload] = {}
    for offset, (read, size) in enumerate(sizes.items()):
        if size <= 0 and read == "R2":
            continue
        upload = hub.state.post_upload(f"{folder.rstrip('/')}/{client_id}_{read}.fastq.gz", hub.now())
        await hub.store.put_generated(upload.bucket, upload.key, max(size, 0), seed * 2 + offset)
        uploads[read] = hub.state.mark_upload_succeeded(upload.id, hub.now())
    fastq = {read.lower(): {"upload": u.id} for read, u in uploads.items()}
    assigned = hub.state.assign(project_id, [{"client_id": client_id, "fastq": fastq}], body.get("metadata"), hub.now())
    for item in assigned:
        lifecycle.start_sample(hub, item.sample.id)
    return json_response(_sample_json(hub, assigned[0].sample), 201)


async def faults_get(request: web.Request) -> web.Response:
    return json_response({"faults": request.app[HUB].faults.snapshot()})


async def faults_add(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = await read_json(request)
    raw_rules = body if isinstance(body, list) else [body]
    rules = [parse_rule(raw) for raw in raw_rules]  # parse all first: a bad rule adds nothing
    for rule in rules:
        hub.faults.add(rule)
    return json_response({"faults": [r.as_dict() for r in rules]}, 201)


async def faults_clear(request: web.Request) -> web.Response:
    request.app[HUB].faults.clear()
    return json_response({"faults": []})


async def log_get(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    q = request.query
    entries = hub.log.query(
        target=q.get("target"),
        method=q.get("method"),
        path=q.get("path"),
        endpoint=q.get("endpoint"),
        operation=q.get("operation"),
        since=int(q.get("since", "0")),
    )
    return json_response({"entries": [e.as_dict() for e in entries], "last_seq": hub.log.last_seq})


async def log_clear(request: web.Request) -> web.Response:
    request.app[HUB].log.clear()
    return json_response({"entries": []})


async def settings_get(request: web.Request) -> web.Response:
    return json_response(asdict(request.app[HUB].state.settings))


async def settings_set(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = await read_json(request) or {}
    known = set(asdict(Settings()))
    unknown = sorted(set(body) - known)
    if unknown:
        raise Invalid({k: ["Unknown setting."] for k in unknown})
    values = {k: float(v) for k, v in body.items()}
    if any(v < 0 for v in values.values()):
        raise Invalid({k: ["Must not be negative."] for k, v in values.items() if v < 0})
    hub.state.settings = replace(hub.state.settings, **values)
    return json_response(asdict(hub.state.settings))


async def failqc(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = await read_json(request) or {}
    project_id, client_id = str(body.get("project_id", "")), str(body.get("client_id", ""))
    hub.state.project(project_id)
    if body.get("fail", True):
        hub.state.fail_qc.add((project_id, client_id))
    else:
        hub.state.fail_qc.discard((project_id, client_id))
    return json_response({"project_id": project_id, "client_id": client_id, "fail": bool(body.get("fail", True))})


async def archive(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = await read_json(request) or {}
    if body.get("project_id"):
        hub.state.project(str(body["project_id"]))
        ids = [s.id for s in hub.state.samples.values() if s.project_id == body["project_id"]]
    else:
        ids = [str(x) for x in body.get("sample_ids") or []]
    now = hub.now()
    for sample_id in ids:
        hub.state.set_archive_status(sample_id, "archived", now)
    return json_response({"archived": ids})


async def webhook_set(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    project_id = request.match_info["project_id"]
    hub.state.project(project_id)
    body = await read_json(request) or {}
    url, secret = body.get("url"), body.get("secret")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or not isinstance(secret, str):
        raise Invalid({"url": ["An http(s) url and a secret are required."]})
    hub.state.subscriptions[project_id] = Subscription(url=url, secret=secret)
    return json_response({"project_id": project_id, "url": url})


async def webhook_clear(request: web.Request) -> web.Response:
    request.app[HUB].state.subscriptions.pop(request.match_info["project_id"], None)
    return json_response({"project_id": request.match_info["project_id"], "url": None})


async def webhook_deliveries(request: web.Request) -> web.Response:
    return json_response({"deliveries": [d.as_dict() for d in request.app[HUB].webhooks.records]})


async def uploads(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return json_response({"uploads": [_upload_json(hub, u) for u in hub.state.uploads.values()]})


async def assignments(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    rows = [
        {
            "upload_id": upload_id,
            "destination_path": hub.state.uploads[upload_id].destination_path
            if upload_id in hub.state.uploads
            else None,
            "attempts": attempts,
            "assigned": upload_id in hub.state.uploads and hub.state.uploads[upload_id].assigned,
            "project_id": hub.state.uploads[upload_id].project_id if upload_id in hub.state.uploads else None,
            "sample_id": hub.state.uploads[upload_id].sample_id if upload_id in hub.state.uploads else None,
        }
        for upload_id, attempts in hub.state.assign_attempts.items()
    ]
    return json_response({"assignments": rows})


async def samples(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    project_id = request.query.get("project_id")
    found = [s for s in hub.state.samples.values() if project_id is None or s.project_id == project_id]
    return json_response({"samples": [_sample_json(hub, s) for s in found]})


async def sample_status(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = await read_json(request) or {}
    wanted = body.get("status")
    if not isinstance(wanted, str) or not wanted:
        raise Invalid({"status": ["This field is required."]})
    sample = hub.state.set_sample_status(
        request.match_info["sample_id"], wanted, hub.now(), note=str(body.get("note", ""))
    )
    if body.get("modified"):  # a sample dated by a server whose clock is off
        try:
            modified = datetime.fromisoformat(str(body["modified"]))
        except ValueError:
            raise Invalid({"modified": ["An ISO-8601 time with a zone is required."]}) from None
        sample = replace(sample, modified=modified)
        hub.state.samples[sample.id] = sample
    if wanted.startswith(("succeeded", "failed")):
        lifecycle.notify(hub, "analysis_complete_v2", sample.project_id, [sample])
    return json_response(_sample_json(hub, sample))


async def add_file(request: web.Request) -> web.Response:
    """A deliverable with a chosen name and size added to a sample (names the pipeline never makes, e.g. a
    `.part` suffix); `seed` makes the bytes. The sample's `modified` moves, as a re-delivery's would."""
    hub = request.app[HUB]
    sample = hub.state.sample(request.match_info["sample_id"])
    body = await read_json(request) or {}
    filename, file_type = str(body.get("filename") or ""), str(body.get("file_type") or "")
    if not filename or "/" in filename or not file_type:
        raise Invalid({"filename": ["A filename without '/' and a file_type are required."]})
    key = f"projects/{sample.project_id}/samples/{sample.id}/extra/{new_id()}"
    bucket = hub.config.deliverables_bucket
    await hub.store.put_generated(bucket, key, max(0, int(body.get("size", 1000))), int(body.get("seed", 0)))
    checksum, size = await hub.store.sha256(bucket, key)
    added = SampleFile(new_id(), file_type, bucket, key, size, checksum, filename)
    hub.state.samples[sample.id] = replace(sample, files=(*sample.files, added), modified=hub.now())
    return json_response(_sample_json(hub, hub.state.sample(sample.id)), 201)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/info", info)
    r.add_post(f"{PREFIX}/reset", reset)
    r.add_post(f"{PREFIX}/projects", create_project)
    r.add_post(f"{PREFIX}/projects/{{project_id}}/samples", seed_sample)
    r.add_get(f"{PREFIX}/faults", faults_get)
    r.add_post(f"{PREFIX}/faults", faults_add)
    r.add_delete(f"{PREFIX}/faults", faults_clear)
    r.add_get(f"{PREFIX}/log", log_get)
    r.add_delete(f"{PREFIX}/log", log_clear)
    r.add_get(f"{PREFIX}/settings", settings_get)
    r.add_post(f"{PREFIX}/settings", settings_set)
    r.add_post(f"{PREFIX}/failqc", failqc)
    r.add_post(f"{PREFIX}/archive", archive)
    r.add_put(f"{PREFIX}/webhooks/{{project_id}}", webhook_set)
    r.add_delete(f"{PREFIX}/webhooks/{{project_id}}", webhook_clear)
    r.add_get(f"{PREFIX}/webhook-deliveries", webhook_deliveries)
    r.add_get(f"{PREFIX}/uploads", uploads)
    r.add_get(f"{PREFIX}/assignments", assignments)
    r.add_get(f"{PREFIX}/samples", samples)
    r.add_post(f"{PREFIX}/samples/{{sample_id}}/status", sample_status)
    r.add_post(f"{PREFIX}/samples/{{sample_id}}/files", add_file)
