"""The sandbox's Gencove v2 API over HTTP, against the subprocess sandbox."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from helpers import make_fastq_gz, s3_client, sha256_file, wait_for

from transferd.sandbox import SandboxProcess

V2 = "/api/v2"


def post_data(sandbox: SandboxProcess, path: str) -> dict[str, Any]:
    return sandbox.control.api("POST", f"{V2}/uploads-post-data/", {"destination_path": path}, expect=[201])


def sample_status(sandbox: SandboxProcess, sample_id: str) -> str:
    return str(sandbox.control.sample(sample_id)["last_status"]["status"])


async def test_upload_flow_end_to_end(sandbox: SandboxProcess, tmp_path: Any) -> None:
    c, info = sandbox.control, sandbox.info
    creds = c.api("POST", f"{V2}/upload-credentials/", {}, expect=[201])
    assert creds["version"] == 1 and creds["expiry_time"].endswith("+00:00")
    sources = {read: make_fastq_gz(tmp_path / f"S1_{read}.fastq.gz", seed=i) for i, read in enumerate(("R1", "R2"))}
    uploads = {read: post_data(sandbox, f"gncv://flow/S1_{read}.fastq.gz") for read in sources}
    for read, upload in uploads.items():
        assert upload["last_status"]["status"] == "started"
        assert upload["s3"]["bucket"] == info.bucket
        assert upload["s3"]["object_name"].endswith(f"/uploads/{upload['id']}.fastq-{read.lower()}")

    async with s3_client(info.s3_url, creds["access_key"], creds["secret_key"], creds["token"]) as s3:
        for read, upload in uploads.items():
            body = sources[read].read_bytes()
            await s3.put_object(Bucket=upload["s3"]["bucket"], Key=upload["s3"]["object_name"], Body=body)

    # The proxy saw the PUTs succeed: the uploads are succeeded at once, and the same path says so.
    assert post_data(sandbox, "gncv://flow/S1_R1.fastq.gz")["last_status"]["status"] == "succeeded"
    sheet = c.api("GET", f"{V2}/sample-sheet/", query={"search": "gncv://flow/", "status": "unassigned"})
    assert sheet["meta"]["count"] == 1
    (item,) = sheet["results"]
    assert item["client_id"] == "S1"
    assert item["fastq"]["r1"]["upload"] == uploads["R1"]["id"]
    assert item["fastq"]["r2"]["upload"] == uploads["R2"]["id"]

    assigned = c.api("POST", f"{V2}/project-samples/{info.project_id}", {"uploads": [item], "metadata": None})
    (row,) = assigned["uploads"]
    sample_id = row["sample"]
    assert row["fastq"]["r2"]["upload"] == uploads["R2"]["id"]
    assert sample_status(sandbox, sample_id) == "running"
    wait_for(lambda: sample_status(sandbox, sample_id) == "succeeded", 10, message="sample to succeed")

    detail = c.sample(sample_id)
    assert detail["project"] == info.project_id and detail["archive_last_status"]["status"] == "available"
    files = {f["file_type"]: f for f in detail["files"]}
    assert set(files) == {"fastq-r1", "fastq-r2", "impute-vcf", "impute-vcf-tbi"}
    async with aiohttp.ClientSession() as http:
        for sample_file in files.values():
            async with http.get(sample_file["download_url"]) as response:
                assert response.status == 200
                data = await response.read()
                assert int(response.headers["Content-Length"]) == sample_file["size"] == len(data)
            assert hashlib.sha256(data).hexdigest() == sample_file["checksum_sha256"]
        # The merged FASTQ is the uploaded object, byte for byte.
        assert files["fastq-r1"]["checksum_sha256"] == sha256_file(sources["R1"])
        disposition = parse_qs(urlsplit(files["fastq-r1"]["download_url"]).query)["response-content-disposition"]
        assert disposition == [f"attachment; filename={sample_id}_R1.fastq.gz"]

        url = files["fastq-r1"]["download_url"]
        whole = sources["R1"].read_bytes()
        async with http.get(url, headers={"Range": "bytes=10-19"}) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 10-19/{len(whole)}"
            assert await response.read() == whole[10:20]
        async with http.head(url) as response:
            assert response.status == 200 and int(response.headers["Content-Length"]) == len(whole)
        async with http.get(url, headers={"Range": f"bytes={len(whole)}-"}) as response:
            assert response.status == 416

    # The same uploads cannot be assigned twice; the sandbox counts both calls.
    status, body = c.request("POST", f"{V2}/project-samples/{info.project_id}", {"uploads": [item]})
    assert status == 400 and uploads["R1"]["id"] in str(body["uploads"])
    attempts = {a["upload_id"]: a for a in c.assignments()}
    assert attempts[uploads["R1"]["id"]]["attempts"] == 2 and attempts[uploads["R1"]["id"]]["assigned"]
    assert [s["id"] for s in c.samples(info.project_id)] == [sample_id]

    # The request log holds the whole conversation in order.
    api_calls = [(e["method"], e["endpoint"]) for e in c.log(target="api")][:6]
    assert api_calls[:3] == [("POST", "upload-credentials")] + [("POST", "uploads-post-data")] * 2
    puts = c.log(target="s3", operation="PutObject")
    assert [(e["status"], e["bytes_in"]) for e in puts] == [(200, len(whole)), (200, sources["R2"].stat().st_size)]
    ranged = [e for e in c.log(target="download") if e["range"] == "bytes=10-19"]
    assert ranged and ranged[0]["status"] == 206 and ranged[0]["bytes_out"] == 10


def test_uploads_post_data_validation_and_deleted_paths(sandbox: SandboxProcess) -> None:
    c = sandbox.control
    first = post_data(sandbox, "gncv://idem/S1_R1.fastq.gz")
    assert post_data(sandbox, "gncv://idem/S1_R1.fastq.gz")["id"] == first["id"]
    assert post_data(sandbox, "gncv://idem/S1_R2.fastq.gz")["id"] != first["id"]
    status, body = c.request("POST", f"{V2}/uploads-post-data/", {"destination_path": "s3://x/S1_R1.fastq.gz"})
    assert status == 400 and "destination_path" in body
    status, body = c.request("POST", f"{V2}/uploads-post-data/", {})
    assert status == 400 and body == {"destination_path": ["This field is required."]}
    c.mark_path_deleted("gncv://idem/S9_R1.fastq.gz")
    status, body = c.request("POST", f"{V2}/uploads-post-data/", {"destination_path": "gncv://idem/S9_R1.fastq.gz"})
    assert status == 400 and "taken by another upload that was deleted" in body["destination_path"][0]


def test_uploads_url_and_uploads_list(sandbox: SandboxProcess) -> None:
    c = sandbox.control
    body = {"destination_path": "gncv://urls/U1_R1.fastq.gz", "source_url": "https://example.org/U1_R1.fastq.gz"}
    imported = c.api("POST", f"{V2}/uploads-url/", body, expect=[201])
    assert imported["source"] == "cli url" and imported["source_url"] == body["source_url"]
    assert imported["last_status"]["status"] == "succeeded"
    assert c.request("POST", f"{V2}/uploads-url/", {**body, "source_url": "ftp://x"})[0] == 400
    started = post_data(sandbox, "gncv://urls/U2_R1.fastq.gz")
    listed = c.api("GET", f"{V2}/uploads/", query={"search": "gncv://urls/", "status": "started"})
    assert [u["id"] for u in listed["results"]] == [started["id"]]
    sheet = c.api("GET", f"{V2}/sample-sheet/", query={"search": "gncv://urls/"})
    assert [e["client_id"] for e in sheet["results"]] == ["U1"]


def test_auth(sandbox: SandboxProcess) -> None:
    c = sandbox.control
    wrong = type(c)(sandbox.info.api_url, "not-the-key")
    for client, path in ((wrong, f"{V2}/projects/"), (wrong, "/_sandbox/uploads")):
        status, body = client.request("GET", path)
        assert status == 401 and isinstance(body, dict) and "detail" in body
    status, body = wrong.request("GET", f"{V2}/projects/")
    assert body["code"] == "token_not_valid"
    tokens = c.api("POST", f"{V2}/jwt-create/", {"email": "a@b.c", "password": "pw"})
    assert set(tokens) == {"access", "refresh"}
    import urllib.request

    request = urllib.request.Request(
        sandbox.info.api_url + f"{V2}/projects", headers={"Authorization": f"Bearer {tokens['access']}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    refreshed = wrong.request("POST", f"{V2}/jwt-refresh/", {"refresh": tokens["refresh"]})
    assert refreshed[0] == 200 and refreshed[1]["access"] != tokens["access"]
    assert wrong.request("POST", f"{V2}/jwt-refresh/", {"refresh": None})[0] == 401
    assert c.request("POST", f"{V2}/jwt-create/", {"email": "a@b.c"})[0] == 400


def test_paging_and_project_samples_filters(sandbox: SandboxProcess) -> None:
    c, project = sandbox.control, sandbox.info.project_id
    c.set_settings(sample_delay=0)
    seeded = [c.seed_sample(project, f"P{i}", r1_size=64, r2_size=0, seed=i)["id"] for i in range(5)]
    c.fail_qc(project, "P9")
    seeded.append(c.seed_sample(project, "P9", r1_size=64, r2_size=0)["id"])
    wait_for(lambda: all(s["last_status"]["status"] != "running" for s in c.samples(project)), 10)

    seen, offset, pages = [], 0, 0
    while True:
        page = c.api("GET", f"{V2}/project-samples/{project}", query={"offset": offset, "limit": 2})
        assert page["meta"]["count"] == 6
        seen += [s["id"] for s in page["results"]]
        pages += 1
        if page["meta"]["next"] is None:
            break
        offset = int(parse_qs(urlsplit(page["meta"]["next"]).query)["offset"][0])
    assert pages == 3 and sorted(seen) == sorted(seeded)

    def ids(**query: Any) -> list[str]:
        return [s["id"] for s in c.api("GET", f"{V2}/project-samples/{project}/", query=query)["results"]]

    assert ids(status="failed") == [seeded[-1]]
    assert len(ids(status="succeeded")) == 5 and len(ids(status="completed")) == 6
    assert ids(search="P3") == [seeded[3]]
    assert ids(sort_by="created", sort_order="asc") == seeded
    assert ids(archive_status="archived") == [] and ids(hidden_status="hidden") == []
    failed = c.sample(seeded[-1])
    assert failed["last_status"]["status"] == "failed qc"
    assert {f["file_type"] for f in failed["files"]} == {"fastq-r1"}  # a failed sample delivers its inputs
    qc = c.api("GET", f"{V2}/sample-quality-controls/{seeded[-1]}")
    assert qc["results"][0]["quality_control"]["status"] == "failed"
    sheet = c.api("GET", f"{V2}/sample-sheet", query={"status": "assigned", "limit": 4})
    assert sheet["meta"]["count"] == 6 and len(sheet["results"]) == 4 and "offset=4" in sheet["meta"]["next"]
    assert c.request("GET", f"{V2}/project-samples/00000000-0000-4000-8000-000000000000")[0] == 404


def test_assignment_validation(sandbox: SandboxProcess) -> None:
    c, project = sandbox.control, sandbox.info.project_id
    missing = "00000000-0000-4000-8000-000000000000"
    status, body = c.request("POST", f"{V2}/project-samples/{missing}", {"uploads": []})
    assert (status, body) == (404, {"detail": "Not found."})
    assert c.api("POST", f"{V2}/project-samples/{project}", {"uploads": [], "metadata": None}, expect=[201]) == {
        "uploads": [],
        "metadata": None,
    }
    started = post_data(sandbox, "gncv://v/S1_R1.fastq.gz")
    item = {"client_id": "S1", "fastq": {"r1": {"upload": started["id"]}}}
    status, body = c.request("POST", f"{V2}/project-samples/{project}", {"uploads": [item]})
    assert status == 400 and started["id"] in body["uploads"][0]
    status, body = c.request("POST", f"{V2}/project-samples/{project}", {"uploads": [item] * 201})
    assert status == 400 and "200" in body["uploads"][0]


def test_sample_endpoints_metadata_checksums_projects(sandbox: SandboxProcess) -> None:
    c, project = sandbox.control, sandbox.info.project_id
    sample = c.seed_sample(project, "M1", r1_size=100, r2_size=50, metadata={"batch": 7})
    wait_for(lambda: sample_status(sandbox, sample["id"]) == "succeeded", 10)
    assert c.api("GET", f"{V2}/sample-metadata/{sample['id']}") == {"metadata": {"batch": 7}}
    c.api("POST", f"{V2}/sample-metadata/{sample['id']}/", {"metadata": {"batch": 8}})
    assert c.api("GET", f"{V2}/sample-metadata/{sample['id']}/") == {"metadata": {"batch": 8}}
    detail = c.sample(sample["id"])
    vcf = next(f for f in detail["files"] if f["file_type"] == "impute-vcf")
    text = c.api("GET", f"{V2}/files/{vcf['id']}.sha256", query={"filename": "x.vcf.gz"})
    assert text == f"{vcf['checksum_sha256']} *x.vcf.gz\n"
    types = c.api("GET", f"{V2}/file-types/", query={"project_id": project})
    assert {t["key"] for t in types["results"]} >= {"fastq-r1", "impute-vcf"}
    projects = c.api("GET", f"{V2}/projects/")["results"]
    assert [p["id"] for p in projects] == [project] and projects[0]["sample_count"] == 1
    assert c.api("GET", f"{V2}/projects/{project}")["id"] == project
    capability = projects[0]["pipeline_capabilities"]
    assert c.api("GET", f"{V2}/pipeline-capabilities/", query={"search": capability})["results"][0]["id"] == capability
    new = c.create_project("second")
    assert c.api("GET", f"{V2}/projects/{new['id']}/")["name"] == "second"
    assert c.request("GET", f"{V2}/samples/nope")[0] == 404
    assert c.request("GET", f"{V2}/no-such-endpoint/")[1] == {"detail": "Not found."}


async def test_archive_and_restore(sandbox: SandboxProcess) -> None:
    c, project = sandbox.control, sandbox.info.project_id
    sample = c.seed_sample(project, "A1", r1_size=200, r2_size=0)
    wait_for(lambda: sample_status(sandbox, sample["id"]) == "succeeded", 10)
    old_url = c.sample(sample["id"])["files"][0]["download_url"]
    assert c.archive([sample["id"]]) == [sample["id"]]
    archived = c.sample(sample["id"])
    assert archived["archive_last_status"]["status"] == "archived"
    assert all(f["download_url"] is None for f in archived["files"])
    async with aiohttp.ClientSession() as http, http.get(old_url) as response:
        assert response.status == 403
    listed = c.api("GET", f"{V2}/project-samples/{project}", query={"archive_status": "archived"})
    assert [s["id"] for s in listed["results"]] == [sample["id"]]

    status, body = c.request("POST", f"{V2}/project-restore-samples/{project}", {"sample_ids": ["x"]})
    assert status == 400 and "archived status" in body["sample_ids"][0]
    assert c.request("POST", f"{V2}/project-restore-samples/{project}", {"sample_ids": []})[0] == 202
    assert c.sample(sample["id"])["archive_last_status"]["status"] == "restore_requested"

    def available() -> bool:
        return c.sample(sample["id"])["archive_last_status"]["status"] == "available"

    wait_for(available, 10, message="restore to finish")
    url = c.sample(sample["id"])["files"][0]["download_url"]
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200 and len(await response.read()) == 200


@pytest.mark.parametrize("path", ["/api/v2/projects", "/api/v2/projects/", "/api/v2/file-types"])
def test_trailing_slash_is_optional(sandbox: SandboxProcess, path: str) -> None:
    assert sandbox.control.request("GET", path)[0] == 200
