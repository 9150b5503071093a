"""JSON shapes of the Gencove v2 API, rendered from state records (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from yarl import URL

from transferd.sandbox.state import Project, Sample, SampleFile, SheetEntry, Status, Upload

T = TypeVar("T")
DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
PIPELINE_CAPABILITY = {
    "id": "6f3b2a0e-5d1c-4a8e-9b7f-2c1d0e9a8b7c",
    "name": "Low-pass sequencing and imputation (sandbox)",
    "key": "sandbox_low_pass",
}
FILE_TYPES = (
    ("fastq-r1", "Merged FASTQ, read 1"),
    ("fastq-r2", "Merged FASTQ, read 2"),
    ("impute-vcf", "Imputed genotypes (VCF)"),
    ("impute-vcf-tbi", "Tabix index of the imputed VCF"),
)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def status(value: Status) -> dict[str, Any]:
    return {"id": value.id, "status": value.status, "note": value.note, "created": iso(value.created)}


def archive_status(value: Status) -> dict[str, Any]:
    return {
        "id": value.id,
        "status": value.status,
        "created": iso(value.created),
        "transition_cutoff": iso(value.transition_cutoff),
    }


def project(value: Project, organization_id: str, sample_count: int, webhook_url: str = "") -> dict[str, Any]:
    return {
        "id": value.id,
        "name": value.name,
        "description": value.description,
        "created": iso(value.created),
        "modified": iso(value.created),
        "hidden": False,
        "organization": organization_id,
        "organization_name": "Sandbox organization",
        "sample_count": sample_count,
        "hidden_sample_count": 0,
        "pipeline_capabilities": PIPELINE_CAPABILITY["id"],
        "project_modifications": [],
        "roles": {"organization": {"id": organization_id, "role": "admin"}},
        "webhook_url": webhook_url,
        "is_shared": False,
        "locked": False,
    }


def upload(value: Upload) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": value.id,
        "destination_path": value.destination_path,
        "s3": {"bucket": value.bucket, "object_name": value.key},
        "last_status": status(value.last_status),
    }
    if value.source_url is not None:
        body.update(source="cli url", source_url=value.source_url)
    return body


def sheet_read(value: Upload) -> dict[str, Any]:
    return {"upload": value.id, "destination_path": value.destination_path, "last_status": status(value.last_status)}


def sheet_entry(value: SheetEntry) -> dict[str, Any]:
    fastq: dict[str, Any] = {}
    if value.r1 is not None:
        fastq["r1"] = sheet_read(value.r1)
    if value.r2 is not None:
        fastq["r2"] = sheet_read(value.r2)
    return {"client_id": value.client_id, "fastq": fastq}


def sample(value: Sample) -> dict[str, Any]:
    return {
        "id": value.id,
        "client_id": value.client_id,
        "created": iso(value.created),
        "modified": iso(value.modified),
        "run": None,
        "physical_id": "",
        "legacy_id": "",
        "last_status": status(value.last_status),
        "archive_last_status": archive_status(value.archive_status),
        "failed_qc": "Sandbox QC failure" if value.last_status.status == "failed qc" else "",
    }


def sample_file(value: SampleFile, download_url: str | None) -> dict[str, Any]:
    return {
        "id": value.id,
        "s3_path": value.key,
        "size": value.size,
        "download_url": download_url,
        "file_type": value.file_type,
        "checksum_sha256": value.checksum_sha256,
    }


def sample_detail(value: Sample, url_for: Callable[[SampleFile], str | None]) -> dict[str, Any]:
    body = sample(value)
    body["project"] = value.project_id
    body["files"] = [sample_file(f, url_for(f)) for f in value.files] if value.has_deliverables else []
    return body


def quality_controls(value: Sample) -> list[dict[str, Any]]:
    outcome = "failed" if value.last_status.status == "failed qc" else "succeeded"
    return [
        {
            "quality_control_type": {"key": "bases_sequenced", "type": "float"},
            "quality_control": {
                "value_expected": 1.0e9,
                "value_measured": 2.5e8 if outcome == "failed" else 1.2e9,
                "value_string": "",
                "status": outcome,
            },
        },
        {
            "quality_control_type": {"key": "format", "type": "bool"},
            "quality_control": {
                "value_expected": None,
                "value_measured": None,
                "value_string": "",
                "status": "succeeded",
            },
        },
    ]


def paging(query: dict[str, str]) -> tuple[int, int]:
    """(offset, limit) from a query, DRF-style: bad values fall back to the defaults."""

    def number(name: str, default: int) -> int:
        try:
            return max(0, int(query.get(name, default)))
        except ValueError:
            return default

    limit = number("limit", DEFAULT_LIMIT) or DEFAULT_LIMIT
    return number("offset", 0), min(limit, MAX_LIMIT)


def page(url: URL, query: dict[str, str], items: Sequence[T], render: Callable[[T], Any]) -> dict[str, Any]:
    offset, limit = paging(query)
    chunk = items[offset : offset + limit]
    base = url.with_query({**query, "limit": str(limit)})
    next_url = str(base.update_query(offset=str(offset + limit))) if offset + limit < len(items) else None
    previous = str(base.update_query(offset=str(max(0, offset - limit)))) if offset > 0 else None
    return {
        "meta": {"count": len(items), "next": next_url, "previous": previous},
        "results": [render(item) for item in chunk],
    }
