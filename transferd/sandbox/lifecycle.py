"""Time-driven state changes: samples running -> succeeded/failed qc with deliverables, archive restores.

Each change runs as a tracked task (cancelled by reset and shutdown). Deliverables are real S3 objects:
server-side copies of the uploaded FASTQs plus a small generated VCF and index, each hashed by
streaming it back from S3.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
from typing import TYPE_CHECKING, Any

from transferd.log import event
from transferd.sandbox.state import Sample, SampleFile, new_id
from transferd.sandbox.webhooks import sample_event

if TYPE_CHECKING:
    from transferd.sandbox.runtime import Sandbox

log = logging.getLogger("transferd.sandbox")


def vcf_bytes(sample: Sample) -> bytes:
    """A small, valid, gzip-compressed VCF that differs per sample."""
    digest = hashlib.sha256(sample.id.encode()).digest()
    lines = [
        "##fileformat=VCFv4.2",
        "##source=transferd-sandbox",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{sample.client_id or sample.id}",
    ]
    genotypes = ("0/0", "0/1", "1/1")
    for i, byte in enumerate(digest[:16]):
        lines.append(f"chr1\t{10_000 + 1_000 * i + byte}\t.\tA\tG\t50\tPASS\t.\tGT\t{genotypes[byte % 3]}")
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def tbi_bytes(sample: Sample) -> bytes:
    return gzip.compress(b"TBI\x01" + hashlib.sha256(b"tbi" + sample.id.encode()).digest(), mtime=0)


def _key(sample: Sample, filename: str) -> str:
    return f"projects/{sample.project_id}/samples/{sample.id}/{filename}"


async def build_deliverables(hub: Sandbox, sample: Sample, with_results: bool) -> list[SampleFile]:
    bucket = hub.config.deliverables_bucket
    planned: list[tuple[str, str]] = []  # (file_type, filename)
    for read, upload_id in (("R1", sample.r1_upload), ("R2", sample.r2_upload)):
        if upload_id is None:
            continue
        upload = hub.state.uploads[upload_id]
        filename = f"{sample.id}_{read}.fastq.gz"
        await hub.store.copy(upload.bucket, upload.key, bucket, _key(sample, filename))
        planned.append((f"fastq-{read.lower()}", filename))
    if with_results:
        await hub.store.put(bucket, _key(sample, f"{sample.id}.vcf.gz"), vcf_bytes(sample))
        planned.append(("impute-vcf", f"{sample.id}.vcf.gz"))
        await hub.store.put(bucket, _key(sample, f"{sample.id}.vcf.gz.tbi"), tbi_bytes(sample))
        planned.append(("impute-vcf-tbi", f"{sample.id}.vcf.gz.tbi"))
    files = []
    for file_type, filename in planned:
        key = _key(sample, filename)
        checksum, size = await hub.store.sha256(bucket, key)
        files.append(
            SampleFile(
                id=new_id(),
                file_type=file_type,
                bucket=bucket,
                key=key,
                size=size,
                checksum_sha256=checksum,
                filename=filename,
            )
        )
    return files


async def run_sample(hub: Sandbox, sample_id: str) -> None:
    await asyncio.sleep(hub.state.settings.sample_delay)
    async with hub.sample_slots:
        sample = hub.state.samples.get(sample_id)
        if sample is None or sample.last_status.status != "running":
            return  # reset or forced to another status meanwhile
        outcome = "failed qc" if sample.fail_qc else "succeeded"
        try:
            files = await build_deliverables(hub, sample, with_results=outcome == "succeeded")
            note = ""
        except Exception as exc:  # a deliverable problem fails the sample, never the sandbox
            event(log, "sandbox.deliverables_failed", logging.ERROR, sample=sample_id, error=repr(exc))
            outcome, files, note = "failed", [], f"deliverables failed: {exc}"
    if hub.state.samples.get(sample_id) is None:
        return
    sample = hub.state.set_sample_status(sample_id, outcome, hub.now(), files=files, note=note)
    event(log, "sandbox.sample_done", sample=sample.id, client_id=sample.client_id, status=outcome)
    notify(hub, "analysis_complete_v2", sample.project_id, [sample])


def start_sample(hub: Sandbox, sample_id: str) -> None:
    hub.tasks.spawn(run_sample(hub, sample_id), name=f"sample-{sample_id}")


def request_restore(hub: Sandbox, sample_ids: list[str]) -> None:
    now = hub.now()
    for sample_id in sample_ids:
        hub.state.set_archive_status(sample_id, "restore_requested", now)
    hub.tasks.spawn(_finish_restore(hub, sample_ids), name="restore")


async def _finish_restore(hub: Sandbox, sample_ids: list[str]) -> None:
    await asyncio.sleep(hub.state.settings.restore_delay)
    restored: list[Sample] = []
    for sample_id in sample_ids:
        sample = hub.state.samples.get(sample_id)
        if sample is not None and sample.archive_status.status == "restore_requested":
            restored.append(hub.state.set_archive_status(sample_id, "available", hub.now()))
    by_project: dict[str, list[Sample]] = {}
    for sample in restored:
        by_project.setdefault(sample.project_id, []).append(sample)
    for project_id, samples in by_project.items():
        notify(hub, "samples_restored", project_id, samples)


def notify(hub: Sandbox, event_type: str, project_id: str, samples: list[Sample]) -> None:
    subscription = hub.state.subscriptions.get(project_id)
    if subscription is None or not samples:
        return
    payload: list[dict[str, Any]] = [
        {"id": s.id, "client_id": s.client_id, "last_status": {"status": s.last_status.status}} for s in samples
    ]
    hub.webhooks.send(subscription.url, subscription.secret, [sample_event(event_type, project_id, payload)])
