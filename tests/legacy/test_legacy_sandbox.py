"""The sandbox's legacy API over HTTP: auth as documented, integer ids, listings, statuses, raw-data selection."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request

from legacy_support import Legacy, call

from transferd.sandbox.legacy import LEGACY_EMAIL, legacy_id


def _jwt(legacy: Legacy) -> str:
    body = {"email": LEGACY_EMAIL, "password": legacy.sandbox.info.api_key, "device_uuid": "d"}
    status, doc = call(legacy.api_url, "POST", "/login", body)
    assert status == 200 and set(doc) >= {"message", "message_details", "refresh_token"}
    status, doc = call(legacy.api_url, "POST", "/auth", {"refresh_token": doc["refresh_token"]})
    assert status == 200 and len(doc["access_token"].split(".")) == 3
    return f"JWT {doc['access_token']}"


def test_auth_open_key_and_jwt_routes(legacy: Legacy) -> None:
    base, key = legacy.api_url, f"GENCOVE-API-KEY {legacy.sandbox.info.api_key}"
    for path in ("/", "/health"):
        status, doc = call(base, "GET", path)
        assert status == 200 and {"message", "message_details"} <= set(doc)
    status, doc = call(base, "GET", "/projects")
    assert status == 401 and {"message", "message_details"} <= set(doc)
    assert call(base, "GET", "/welcome-api-key", auth=key)[0] == 200
    assert call(base, "GET", "/welcome-api-key", auth="GENCOVE-API-KEY nope")[0] == 401
    jwt = _jwt(legacy)
    assert call(base, "GET", "/welcome-api-key", auth=jwt)[0] == 401  # the key only
    assert call(base, "GET", "/projects", auth=jwt)[0] == 200
    assert call(base, "GET", "/projects", auth="JWT a.b.c")[0] == 401
    assert call(base, "POST", "/login", {"email": LEGACY_EMAIL, "password": "wrong"})[0] == 401
    assert call(base, "POST", "/auth", {"refresh_token": "made-up"})[0] == 401
    legacy.sandbox.control.api("POST", "/_sandbox/legacy", {"rotate": True})
    assert call(base, "GET", "/projects", auth=jwt)[0] == 401  # rotated: old access tokens die


def test_projects_and_apps_list_the_same_samples_with_integer_ids(legacy: Legacy) -> None:
    base, jwt = legacy.api_url, _jwt(legacy)
    pid, aid = legacy.view("projects"), legacy.view("apps")
    samples = legacy.finished(2)
    legacy.same_external_id(samples, "TWIN")
    lids = sorted(legacy_id(s["id"]) for s in samples)

    status, doc = call(base, "GET", "/projects", auth=jwt)
    assert [(p["id"], p["sample_count"]) for p in doc["projects"]] == [(pid, 2)]
    status, doc = call(base, "PUT", f"/projects/{pid}", {"webhook_url": "https://hooks.example/x"}, auth=jwt)
    assert status == 200 and doc["project"]["webhook_url"] == "https://hooks.example/x"
    status, doc = call(base, "GET", f"/projects/{pid}/samples", auth=jwt)
    assert sorted(s["id"] for s in doc["samples"]) == lids
    assert {(s["project_id"], s["external_id"], s["participating"]) for s in doc["samples"]} == {(pid, "TWIN", True)}
    status, doc = call(base, "GET", f"/apps/{aid}/members", auth=jwt)
    assert sorted(m["id"] for m in doc["members"]) == lids and doc["members"][0]["app_id"] == aid

    status, doc = call(base, "POST", f"/projects/{pid}/samples/orders", {"sample_ids": [*lids, 1]}, auth=jwt)
    assert sorted(o["sample_id"] for o in doc["orders"]) == lids and {o["status"] for o in doc["orders"]} == {
        "succeeded"
    }
    assert call(base, "GET", f"/projects/{pid}/samples/{lids[0]}/order", auth=jwt)[1]["order"]["status"] == "succeeded"
    assert call(base, "GET", f"/apps/{aid}/members/{lids[0]}/order", auth=jwt)[1]["order"]["member_id"] == lids[0]
    assert call(base, "POST", f"/apps/{aid}/members/orders", {"member_ids": lids}, auth=jwt)[0] in (404, 405)
    assert call(base, "GET", f"/projects/{pid}/samples/1/order", auth=jwt)[0] == 404
    assert call(base, "GET", "/projects/999/samples", auth=jwt)[0] == 404


def test_raw_data_selection_aliases_and_signed_urls(legacy: Legacy) -> None:
    base, key = legacy.api_url, f"GENCOVE-API-KEY {legacy.sandbox.info.api_key}"
    pid, aid = legacy.view("projects"), legacy.view("apps")
    samples = legacy.finished(2)
    legacy.same_external_id(samples, "TWIN")
    lid = legacy_id(samples[0]["id"])

    def raw(path: str, body: object) -> tuple[int, dict]:
        return call(base, "POST", path, body, auth=key)

    for body in ({}, {"sample_ids": None}):
        assert len(raw(f"/projects/{pid}/raw-data", body)[1]["raw_data"]) == 2  # omitted or null: all
    assert raw(f"/projects/{pid}/raw-data", {"sample_ids": []})[1]["raw_data"] == []  # []: none
    assert raw(f"/projects/{pid}/raw-data", {"sample_ids": [lid], "external_ids": ["TWIN"]})[0] == 400
    assert len(raw(f"/projects/{pid}/raw-data", {"external_ids": ["TWIN"]})[1]["raw_data"]) == 2  # not unique
    status, doc = raw(f"/projects/{pid}/raw-data", {"sample_ids": [lid]})
    (row,) = doc["raw_data"]
    assert status == 200 and doc["trait_descriptions"] and row["trait_values"]
    assert (row["sample_id"], row["project_id"], row["external_id"]) == (lid, pid, "TWIN")
    assert row["bam_url_s3"] is None and row["traits_url_s3"] is None
    alias, vcf = urllib.parse.urlsplit(row["url_s3"]), urllib.parse.urlsplit(row["vcf_url_s3"])
    assert alias.path == vcf.path and alias.query != vcf.query  # the same object, signed on its own
    with urllib.request.urlopen(row["vcf_url_s3"], timeout=30) as resp:
        data = resp.read()
    vcf_file = next(f for f in samples[0]["files"] if f["file_type"] == "impute-vcf")
    assert hashlib.sha256(data).hexdigest() == vcf_file["checksum_sha256"]
    assert f"filename%3D{lid}.vcf.gz" in row["vcf_url_s3"]  # named the legacy way
    log = legacy.sandbox.control.log(path=f"/projects/{pid}/raw-data")
    assert [e["extra"].get("ids") for e in log][-2:] == ["external:TWIN", str(lid)]

    status, doc = raw(f"/apps/{aid}/raw-data", {"member_ids": [lid]})
    (member,) = doc["raw_data"]
    assert status == 200 and "trait_descriptions" not in doc
    assert (member["member_id"], member["app_id"]) == (lid, aid) and member["vcf_url_s3"]
    assert not any(k.startswith(("fastq", "trait")) for k in member)

    legacy.sandbox.control.add_fault(url_ttl=-60, times=1)
    (expired,) = raw(f"/projects/{pid}/raw-data", {"sample_ids": [lid]})[1]["raw_data"]
    req = urllib.request.Request(expired["tbi_url_s3"])
    try:
        urllib.request.urlopen(req, timeout=30)
        raise AssertionError("an expired URL was served")
    except urllib.error.HTTPError as e:
        assert e.code == 403
