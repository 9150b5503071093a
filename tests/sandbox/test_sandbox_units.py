"""Pure parts of the sandbox: naming/pairing, assignment rules, fault rules, S3 request parsing, signing."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from transferd.sandbox.downloads import ByteRange, UrlSigner, parse_range
from transferd.sandbox.faults import FaultBook, FaultError, parse_rule
from transferd.sandbox.s3proxy import access_key_of, classify
from transferd.sandbox.state import Invalid, NotFound, SampleFile, SandboxState, Settings, parse_gncv_path
from transferd.sandbox.webhooks import sign_webhook

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_state() -> SandboxState:
    state = SandboxState(organization_id="org", user_id="user", upload_bucket="b", settings=Settings())
    state.add_project("p", NOW, "proj")
    return state


@pytest.mark.parametrize(
    ("path", "client_id", "read", "folder"),
    [
        ("gncv://run1/S1_R1.fastq.gz", "S1", "R1", "gncv://run1/"),
        ("gncv://run1/S1_R2.fastq.gz", "S1", "R2", "gncv://run1/"),
        ("gncv://a/b/SAMP3_R2_L001.fq.gz", "SAMP3", "R2", "gncv://a/b/"),
        ("gncv://a/SAMP3_L001_R2_001.fastq.gz", "SAMP3", "R2", "gncv://a/"),
        ("gncv://a/X_R20.fastq.gz", "X", "R1", "gncv://a/"),
        ("gncv://a/test.fastq.gz", "test", "R1", "gncv://a/"),
    ],
)
def test_gncv_path_parsing(path: str, client_id: str, read: str, folder: str) -> None:
    parsed = parse_gncv_path(path)
    assert (parsed.client_id, parsed.read, parsed.folder) == (client_id, read, folder)


def test_upload_is_idempotent_per_path_and_keyed_by_read() -> None:
    state = make_state()
    first = state.post_upload("gncv://f/S1_R2.fastq.gz", NOW)
    again = state.post_upload("gncv://f/S1_R2.fastq.gz", NOW + timedelta(seconds=5))
    assert first.id == again.id
    assert first.key == f"organization/org/user/user/uploads/{first.id}.fastq-r2"
    assert first.last_status.status == "started"


def test_sample_sheet_pairs_by_folder_and_client_and_lists_only_succeeded() -> None:
    state = make_state()
    ids = {p: state.post_upload(p, NOW).id for p in (
        "gncv://f/S1_R1.fastq.gz", "gncv://f/S1_R2.fastq.gz", "gncv://g/S1_R1.fastq.gz", "gncv://f/S2_R1.fastq.gz",
    )}  # fmt: skip
    for path, upload_id in ids.items():
        if path != "gncv://f/S2_R1.fastq.gz":
            state.mark_upload_succeeded(upload_id, NOW)
    sheet = state.sample_sheet(search="gncv://f/")
    assert len(sheet) == 1
    (entry,) = sheet
    assert entry.client_id == "S1"
    assert entry.r1 is not None and entry.r1.id == ids["gncv://f/S1_R1.fastq.gz"]
    assert entry.r2 is not None and entry.r2.id == ids["gncv://f/S1_R2.fastq.gz"]
    assert len(state.sample_sheet()) == 2  # the g/ folder is its own sample


def test_assignment_rules() -> None:
    state = make_state()
    r1 = state.post_upload("gncv://f/S1_R1.fastq.gz", NOW)
    item = {"client_id": "S1", "fastq": {"r1": {"upload": r1.id}}}
    with pytest.raises(Invalid, match="not in succeeded"):
        state.assign("proj", [item], None, NOW)
    state.mark_upload_succeeded(r1.id, NOW)
    with pytest.raises(NotFound):
        state.assign("nope", [item], None, NOW)
    with pytest.raises(Invalid, match="no more than 200"):
        state.assign("proj", [item] * 201, None, NOW)
    assert state.assign("proj", [], None, NOW) == []
    (done,) = state.assign("proj", [item], {"k": 1}, NOW)
    assert done.sample.last_status.status == "running" and done.sample.metadata == {"k": 1}
    with pytest.raises(Invalid) as excinfo:
        state.assign("proj", [item], None, NOW)
    assert r1.id in excinfo.value.errors["uploads"][0]
    assert state.assign_attempts[r1.id] == 3  # every validated call naming it counts
    assert state.sample_sheet(status="unassigned") == [] and len(state.sample_sheet(status="assigned")) == 1


def test_credentials_expire_only_for_issued_keys() -> None:
    state = make_state()
    creds = state.issue_credentials(NOW, ttl=10)
    assert not state.credentials_expired(creds.access_key, NOW + timedelta(seconds=9))
    assert state.credentials_expired(creds.access_key, NOW + timedelta(seconds=10))
    assert not state.credentials_expired("AKIAUNKNOWN", NOW + timedelta(days=9))
    assert state.issue_credentials(NOW, 10).access_key != creds.access_key


def test_fault_rules_parse_and_consume() -> None:
    book = FaultBook()
    book.add(parse_rule({"target": "api", "endpoint": "sample-sheet", "status": 503, "times": 2}))
    book.add(parse_rule({"target": "api", "latency": 0.25}))
    first = book.take_api("GET", "sample-sheet", "/api/v2/sample-sheet/")
    assert first.rule is not None and first.rule.status == 503 and first.latency == 0.25
    assert book.take_api("GET", "projects", "/api/v2/projects/").rule is None
    assert book.take_api("GET", "sample-sheet", "/api/v2/sample-sheet/").rule is not None
    assert book.take_api("GET", "sample-sheet", "/api/v2/sample-sheet/").rule is None
    assert [r["latency"] for r in book.snapshot()] == [0.25]  # the spent rule is gone, latency stays

    book.add(parse_rule({"target": "s3", "operation": "UploadPart", "part": 2, "status": 503}))
    assert book.take_s3("PUT", "UploadPart", 1).rule is None
    assert book.take_s3("PUT", "UploadPart", 2).rule is not None
    assert book.take_s3("PUT", "UploadPart", 2).rule is None

    book.add(parse_rule({"credentials_ttl": 5, "times": 1}))
    assert book.credentials_ttl() == 5.0 and book.credentials_ttl() is None
    book.add(parse_rule({"target": "api", "endpoint": r"^/api/v2/project-samples/.+", "method": "post", "status": 429}))
    assert book.take_api("GET", "project-samples", "/api/v2/project-samples/x").rule is None
    assert book.take_api("POST", "project-samples", "/api/v2/project-samples/x").rule is not None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"target": "api", "stauts": 503}, "stauts"),
        ({"target": "nowhere"}, "target"),
        ({"target": "api", "status": "503"}, "status"),
        ({"target": "api", "status": 503, "times": 0}, "times"),
        ({"target": "api", "endpoint": "("}, "endpoint"),
        ({"target": "deleted_path"}, "path"),
    ],
)
def test_bad_fault_rules_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(FaultError, match=message):
        parse_rule(raw)


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "operation", "part"),
    [
        ("PUT", "/b/k/x.fastq-r1", {}, {}, "PutObject", None),
        ("POST", "/b/k", {"uploads": ""}, {}, "CreateMultipartUpload", None),
        ("PUT", "/b/k", {"partNumber": "3", "uploadId": "u"}, {}, "UploadPart", 3),
        ("POST", "/b/k", {"uploadId": "u"}, {}, "CompleteMultipartUpload", None),
        ("GET", "/b/k", {"uploadId": "u"}, {}, "ListParts", None),
        ("DELETE", "/b/k", {"uploadId": "u"}, {}, "AbortMultipartUpload", None),
        ("GET", "/b/k", {}, {}, "GetObject", None),
        ("HEAD", "/b/k", {}, {}, "HeadObject", None),
        ("PUT", "/b/k", {}, {"x-amz-copy-source": "/b/o"}, "CopyObject", None),
        ("GET", "/b", {"list-type": "2"}, {}, "ListObjectsV2", None),
        ("GET", "/b", {"uploads": ""}, {}, "ListMultipartUploads", None),
        ("PUT", "/b", {}, {}, "CreateBucket", None),
    ],
)
def test_s3_operation_names(
    method: str, path: str, query: dict[str, str], headers: dict[str, str], operation: str, part: int | None
) -> None:
    request = classify(method, path, query, headers)
    assert (request.operation, request.part) == (operation, part)


def test_access_key_from_header_or_presigned_query() -> None:
    header = {"Authorization": "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20260101/us-east-1/s3/aws4_request, X=y"}
    assert access_key_of(header, {}) == "ASIAEXAMPLE"
    assert access_key_of({}, {"X-Amz-Credential": "ASIAQ/20260101/us-east-1/s3/aws4_request"}) == "ASIAQ"
    assert access_key_of({}, {}) is None


def test_range_parsing() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=10-19", 100) == ByteRange(10, 19)
    assert parse_range("bytes=90-", 100) == ByteRange(90, 99)
    assert parse_range("bytes=-5", 100) == ByteRange(95, 99)
    assert parse_range("bytes=50-500", 100) == ByteRange(50, 99)
    assert parse_range("bytes=100-", 100) == "unsatisfiable"
    assert parse_range("bytes=0-1,5-6", 100) is None


def test_signed_urls_check_signature_and_expiry() -> None:
    signer = UrlSigner("http://h:1", secret=b"k")
    sample_file = SampleFile("f1", "fastq-r1", "b", "k", 10, "0" * 64, "S_R1.fastq.gz")
    url = signer.sign(sample_file, ttl=60, now=1000.0)
    assert url.startswith("http://h:1/_dl/f1?expires=1060&sig=")
    assert url.endswith("response-content-disposition=attachment%3B%20filename%3DS_R1.fastq.gz")
    sig = url.split("sig=")[1].split("&")[0]
    disposition = "attachment; filename=S_R1.fastq.gz"
    assert signer.check("f1", "1060", disposition, sig, now=1059.0) is None
    assert signer.check("f1", "1060", disposition, sig, now=1061.0) == "Request has expired"
    assert "signature" in (signer.check("f1", "1061", disposition, sig, now=1000.0) or "")


def test_sign_webhook_matches_the_documented_scheme() -> None:
    body = b'[{"event_id": "e"}]'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha512).hexdigest()
    assert sign_webhook("s3cret", body, 1700000000) == f"t=1700000000,v1={expected}"
