"""The sandbox's in-memory model of a Gencove organisation: pure data and rules, no I/O.

Records are frozen dataclasses; `SandboxState` holds them in dicts and swaps in updated copies
(`dataclasses.replace`), so a record handed to a renderer never changes under it. Every method takes
`now` explicitly, which keeps this module deterministic and easy to test.
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

FASTQ_ENDINGS = (".fastq.gz", ".fastq.bgz", ".fq.gz", ".fq.bgz")
ASSIGN_BATCH_LIMIT = 200
DELETED_PATH_MESSAGE = (
    "Destination {path} is taken by another upload that was deleted. Please choose a different destination."
)
_R2_TOKEN = re.compile(r"_R2(?=[_.])")


class NotFound(Exception):
    """The object named in the request does not exist (HTTP 404)."""


class Invalid(Exception):
    """A request failed validation (HTTP 400 with DRF's `{field: [messages]}` body)."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = dict(errors)


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Status:
    id: str
    status: str
    created: datetime
    note: str = ""
    transition_cutoff: datetime | None = None

    @classmethod
    def make(cls, status: str, now: datetime, note: str = "") -> Status:
        return cls(id=new_id(), status=status, created=now, note=note)


@dataclass(frozen=True, slots=True)
class Settings:
    """Runtime knobs a test may change (reset restores the start-up values)."""

    sample_delay: float = 2.0
    restore_delay: float = 2.0
    url_ttl: float = 3600.0
    credentials_ttl: float = 3600.0
    # Seconds between an object landing in S3 and its upload being `succeeded` (the real service learns from S3
    # events, a little later; until then an upload slot does not say the bytes are there).
    upload_notice_delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    created: datetime
    description: str = ""


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str
    expiry: datetime


@dataclass(frozen=True, slots=True)
class GncvPath:
    """What the server reads out of a `gncv://` destination path."""

    folder: str
    filename: str
    client_id: str
    read: str  # "R1" | "R2"


def parse_gncv_path(path: str) -> GncvPath:
    folder, _, filename = path.rpartition("/")
    head = filename.split("_", 1)[0] if "_" in filename else filename.split(".", 1)[0]
    read = "R2" if _R2_TOKEN.search(filename) else "R1"
    return GncvPath(folder=folder + "/", filename=filename, client_id=head, read=read)


def validate_destination(path: object) -> str:
    if not isinstance(path, str) or not path:
        raise Invalid({"destination_path": ["This field is required."]})
    if not path.startswith("gncv://"):
        raise Invalid({"destination_path": ["Destination path must start with gncv://"]})
    if not path.lower().endswith(FASTQ_ENDINGS):
        raise Invalid({"destination_path": [f"Unsupported file ending: {path}"]})
    return path


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    destination_path: str
    bucket: str
    key: str
    client_id: str
    read: str
    folder: str
    created: datetime
    last_status: Status
    source_url: str | None = None
    project_id: str | None = None
    sample_id: str | None = None

    @property
    def assigned(self) -> bool:
        return self.sample_id is not None


@dataclass(frozen=True, slots=True)
class SheetEntry:
    """One sample-sheet row: uploads paired by folder and client_id."""

    client_id: str
    folder: str
    r1: Upload | None
    r2: Upload | None

    @property
    def uploads(self) -> tuple[Upload, ...]:
        return tuple(u for u in (self.r1, self.r2) if u is not None)

    @property
    def created(self) -> datetime:
        return min(u.created for u in self.uploads)

    @property
    def modified(self) -> datetime:
        return max(u.last_status.created for u in self.uploads)

    @property
    def assigned(self) -> bool:
        return any(u.assigned for u in self.uploads)


@dataclass(frozen=True, slots=True)
class SampleFile:
    id: str
    file_type: str
    bucket: str
    key: str
    size: int
    checksum_sha256: str
    filename: str  # the default download filename, e.g. "<sample id>_R1.fastq.gz"


@dataclass(frozen=True, slots=True)
class Sample:
    id: str
    project_id: str
    client_id: str
    created: datetime
    modified: datetime
    last_status: Status
    archive_status: Status
    r1_upload: str | None
    r2_upload: str | None
    files: tuple[SampleFile, ...] = ()
    metadata: Any = None
    fail_qc: bool = False

    @property
    def has_deliverables(self) -> bool:
        return self.last_status.status.startswith(("succeeded", "failed"))

    @property
    def downloadable(self) -> bool:
        return self.archive_status.status in ("available", "restored")


@dataclass(frozen=True, slots=True)
class Subscription:
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class AssignedItem:
    client_id: str
    r1: str
    r2: str | None
    sample: Sample


# Sample list filter values (`status=`) and the sample statuses each admits.
def _status_matches(wanted: str, status: str) -> bool:
    if wanted in ("", "all"):
        return True
    if wanted == "completed":
        return status.startswith(("succeeded", "failed"))
    if wanted == "failed":
        return status.startswith("failed")
    return status == wanted


def _random_key(prefix: str, length: int) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass(slots=True)
class SandboxState:
    """Everything the fake Gencove knows. Mutated only from the event loop's single thread."""

    organization_id: str
    user_id: str
    upload_bucket: str
    settings: Settings
    projects: dict[str, Project] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    uploads_by_path: dict[str, str] = field(default_factory=dict)
    uploads_by_key: dict[tuple[str, str], str] = field(default_factory=dict)
    samples: dict[str, Sample] = field(default_factory=dict)
    credentials: dict[str, Credentials] = field(default_factory=dict)
    access_tokens: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=set)
    assign_attempts: dict[str, int] = field(default_factory=dict)
    fail_qc: set[tuple[str, str]] = field(default_factory=set)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)

    # -- projects ----------------------------------------------------------------------------------
    def add_project(self, name: str, now: datetime, project_id: str | None = None) -> Project:
        project = Project(id=project_id or new_id(), name=name, created=now)
        self.projects[project.id] = project
        return project

    def project(self, project_id: str) -> Project:
        try:
            return self.projects[project_id]
        except KeyError:
            raise NotFound(project_id) from None

    def sample_count(self, project_id: str) -> int:
        return sum(1 for s in self.samples.values() if s.project_id == project_id)

    # -- auth --------------------------------------------------------------------------------------
    def issue_jwt(self) -> tuple[str, str]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        return access, refresh

    def refresh_jwt(self, refresh: object) -> str | None:
        if not isinstance(refresh, str) or refresh not in self.refresh_tokens:
            return None
        access = secrets.token_urlsafe(24)
        self.access_tokens.add(access)
        return access

    def issue_credentials(self, now: datetime, ttl: float) -> Credentials:
        creds = Credentials(
            access_key=_random_key("ASIA", 16),
            secret_key=secrets.token_urlsafe(30),
            token=secrets.token_urlsafe(48),
            expiry=now + timedelta(seconds=ttl),
        )
        self.credentials[creds.access_key] = creds
        return creds

    def credentials_expired(self, access_key: str, now: datetime) -> bool:
        """True only for a key this sandbox issued whose expiry has passed; unknown keys pass."""
        creds = self.credentials.get(access_key)
        return creds is not None and now >= creds.expiry

    # -- uploads -----------------------------------------------------------------------------------
    def post_upload(self, path: str, now: datetime, source_url: str | None = None) -> Upload:
        """Return the upload for `path`, creating it on first use (idempotent per path)."""
        existing = self.uploads_by_path.get(path)
        if existing is not None:
            return self.uploads[existing]
        parsed = parse_gncv_path(path)
        upload_id = new_id()
        key = f"organization/{self.organization_id}/user/{self.user_id}/uploads/{upload_id}.fastq-{parsed.read.lower()}"
        upload = Upload(
            id=upload_id,
            destination_path=path,
            bucket=self.upload_bucket,
            key=key,
            client_id=parsed.client_id,
            read=parsed.read,
            folder=parsed.folder,
            created=now,
            last_status=Status.make("started", now),
            source_url=source_url,
        )
        self.uploads[upload.id] = upload
        self.uploads_by_path[path] = upload.id
        self.uploads_by_key[(upload.bucket, upload.key)] = upload.id
        return upload

    def upload_for_object(self, bucket: str, key: str) -> Upload | None:
        upload_id = self.uploads_by_key.get((bucket, key))
        return self.uploads.get(upload_id) if upload_id else None

    def mark_upload_succeeded(self, upload_id: str, now: datetime) -> Upload:
        upload = self.uploads[upload_id]
        if upload.last_status.status != "succeeded":
            upload = replace(upload, last_status=Status.make("succeeded", now))
            self.uploads[upload_id] = upload
        return upload

    def started_uploads(self) -> list[Upload]:
        return [u for u in self.uploads.values() if u.last_status.status == "started" and not u.source_url]

    # -- sample sheet ------------------------------------------------------------------------------
    def sample_sheet(self, search: str = "", status: str = "all") -> list[SheetEntry]:
        groups: dict[tuple[str, str], dict[str, list[Upload]]] = {}
        for upload in self.uploads.values():
            if upload.last_status.status != "succeeded":
                continue
            reads = groups.setdefault((upload.folder, upload.client_id), {"R1": [], "R2": []})
            reads[upload.read].append(upload)
        entries: list[SheetEntry] = []
        for (folder, client_id), reads in groups.items():
            r1s = sorted(reads["R1"], key=lambda u: u.created)
            r2s = sorted(reads["R2"], key=lambda u: u.created)
            # Several files of one read (e.g. lanes) are not merged by the server: each pair is a row.
            for i in range(max(len(r1s), len(r2s))):
                entry = SheetEntry(
                    client_id=client_id,
                    folder=folder,
                    r1=r1s[i] if i < len(r1s) else None,
                    r2=r2s[i] if i < len(r2s) else None,
                )
                if search and not any(search in u.destination_path for u in entry.uploads):
                    continue
                if status == "assigned" and not entry.assigned:
                    continue
                if status == "unassigned" and entry.assigned:
                    continue
                entries.append(entry)
        return entries

    # -- assignment --------------------------------------------------------------------------------
    def assign(self, project_id: str, items: object, metadata: Any, now: datetime) -> list[AssignedItem]:
        """Validate every item first, then create one `running` sample per item (all or nothing)."""
        self.project(project_id)
        if not isinstance(items, list):
            raise Invalid({"uploads": ["This field is required and must be a list."]})
        if len(items) > ASSIGN_BATCH_LIMIT:
            raise Invalid({"uploads": [f"Ensure this field has no more than {ASSIGN_BATCH_LIMIT} elements."]})
        parsed: list[tuple[str, str, str | None]] = []
        errors: list[str] = []
        seen: set[str] = set()
        for index, item in enumerate(items):
            client_id, r1, r2 = _read_assign_item(item, index, errors)
            for upload_id in (r1, r2):
                if upload_id is None:
                    continue
                self.assign_attempts[upload_id] = self.assign_attempts.get(upload_id, 0) + 1
                upload = self.uploads.get(upload_id)
                if upload is None:
                    errors.append(f"Upload {upload_id} does not exist.")
                elif upload.last_status.status != "succeeded":
                    errors.append(f"Upload {upload_id} is not in succeeded status.")
                elif upload.assigned:
                    errors.append(f"Upload {upload_id} is already assigned to a sample.")
                elif upload_id in seen:
                    errors.append(f"Upload {upload_id} appears more than once in this request.")
                seen.add(upload_id)
            if r1 is not None and r1 in self.uploads:
                parsed.append((client_id or self.uploads[r1].client_id, r1, r2))
        if errors:
            raise Invalid({"uploads": errors})
        assigned: list[AssignedItem] = []
        for client_id, r1, r2 in parsed:
            sample = Sample(
                id=new_id(),
                project_id=project_id,
                client_id=client_id,
                created=now,
                modified=now,
                last_status=Status.make("running", now),
                archive_status=Status.make("available", now),
                r1_upload=r1,
                r2_upload=r2,
                metadata=metadata,
                fail_qc=(project_id, client_id) in self.fail_qc,
            )
            self.samples[sample.id] = sample
            for upload_id in (r1, r2):
                if upload_id is not None:
                    self.uploads[upload_id] = replace(
                        self.uploads[upload_id], project_id=project_id, sample_id=sample.id
                    )
            assigned.append(AssignedItem(client_id=client_id, r1=r1, r2=r2, sample=sample))
        return assigned

    # -- samples -----------------------------------------------------------------------------------
    def sample(self, sample_id: str) -> Sample:
        try:
            return self.samples[sample_id]
        except KeyError:
            raise NotFound(sample_id) from None

    def set_sample_status(
        self, sample_id: str, status: str, now: datetime, files: Iterable[SampleFile] | None = None, note: str = ""
    ) -> Sample:
        sample = self.sample(sample_id)
        updated = replace(sample, last_status=Status.make(status, now, note), modified=now)
        if files is not None:
            updated = replace(updated, files=tuple(files))
        self.samples[sample_id] = updated
        return updated

    def set_archive_status(self, sample_id: str, status: str, now: datetime) -> Sample:
        sample = self.sample(sample_id)
        updated = replace(sample, archive_status=Status.make(status, now), modified=now)
        self.samples[sample_id] = updated
        return updated

    def set_metadata(self, sample_id: str, metadata: Any) -> Sample:
        updated = replace(self.sample(sample_id), metadata=metadata)
        self.samples[sample_id] = updated
        return updated

    def file(self, file_id: str) -> tuple[Sample, SampleFile]:
        for sample in self.samples.values():
            for sample_file in sample.files:
                if sample_file.id == file_id:
                    return sample, sample_file
        raise NotFound(file_id)

    def project_samples(
        self,
        project_id: str,
        *,
        status: str = "all",
        archive_status: str = "all",
        search: str = "",
        hidden_status: str = "visible",
        sort_by: str = "created",
        sort_order: str = "desc",
    ) -> list[Sample]:
        self.project(project_id)
        if hidden_status == "hidden":
            return []  # the sandbox never hides samples
        found = [
            s
            for s in self.samples.values()
            if s.project_id == project_id
            and _status_matches(status, s.last_status.status)
            and archive_status in ("", "all", s.archive_status.status)
            and (not search or search in s.client_id or search in s.id)
        ]
        keys = {
            "created": lambda s: (s.created, s.id),
            "modified": lambda s: (s.modified, s.id),
            "status": lambda s: (s.last_status.status, s.id),
            "client_id": lambda s: (s.client_id, s.id),
            "id": lambda s: (s.id, s.id),
        }
        found.sort(key=keys.get(sort_by, keys["created"]), reverse=sort_order != "asc")
        return found

    def restorable(self, project_id: str, sample_ids: object) -> list[str]:
        """The ids a restore request names, validated: all in the project and archived."""
        self.project(project_id)
        if sample_ids is None:
            sample_ids = []
        message = "All sample ids must be part of the current project and in archived status."
        if not isinstance(sample_ids, list):
            raise Invalid({"sample_ids": [message]})
        archived = [
            s.id for s in self.samples.values() if s.project_id == project_id and s.archive_status.status == "archived"
        ]
        if not sample_ids:
            return archived
        wanted = [str(x) for x in sample_ids]
        if any(x not in archived for x in wanted):
            raise Invalid({"sample_ids": [message]})
        return wanted


def _read_assign_item(item: object, index: int, errors: list[str]) -> tuple[str, str | None, str | None]:
    """Pull (client_id, r1 upload id, r2 upload id) out of a sample-sheet item echoed by a client."""
    if not isinstance(item, dict):
        errors.append(f"Item {index} is not an object.")
        return "", None, None
    client_id = item.get("client_id")
    fastq = item.get("fastq")
    if not isinstance(fastq, dict):
        errors.append(f"Item {index}: fastq is required.")
        return "", None, None

    def upload_of(read: str) -> str | None:
        entry = fastq.get(read)
        if entry is None:
            return None
        value = entry.get("upload") if isinstance(entry, dict) else None
        if not isinstance(value, str):
            errors.append(f"Item {index}: fastq.{read}.upload must be an upload id.")
            return None
        return value

    r1, r2 = upload_of("r1"), upload_of("r2")
    if fastq.get("r1") is None:
        errors.append(f"Item {index}: fastq.r1 is required.")
    if client_id is not None and not isinstance(client_id, str):
        errors.append(f"Item {index}: client_id must be a string.")
        client_id = None
    return client_id or "", r1, r2
