"""Helpers of the legacy-API tests (imported as `from legacy_support import ...`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import sha256_file, wait_for

from transferd.config import Config, DownloadConfig, GencoveConfig, ProjectSource
from transferd.sandbox import SandboxProcess
from transferd.sandbox.legacy import LEGACY_EMAIL, legacy_id

# What the sandbox's v2 file types are called in legacy raw-data, by the mirror's legacy file types.
LEGACY_TYPES = {"fastq-r1": "fastq-r1", "fastq-r2": "fastq-r2", "impute-vcf": "vcf", "impute-vcf-tbi": "tbi"}


def call(base: str, method: str, path: str, body: Any = None, auth: str | None = None) -> tuple[int, Any]:
    """One request to the sandbox with any Authorization header; (status, decoded JSON)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **({"Authorization": auth} if auth else {})}
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, _decode(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, _decode(e.read())


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace")  # e.g. aiohttp's own text 404 for a route that does not exist


@dataclass
class Legacy:
    """Legacy views of the sandbox's ready project and what a test needs around them."""

    sandbox: SandboxProcess
    tmp: Path

    @property
    def api_url(self) -> str:
        return self.sandbox.info.api_url

    def view(self, kind: str = "projects") -> int:
        body = {"project_id": self.sandbox.info.project_id, "kind": kind}
        return int(self.sandbox.control.api("POST", "/_sandbox/legacy/views", body)["id"])

    def finished(self, n: int = 1, prefix: str = "S", r1_size: int = 4096, r2_size: int = 2048) -> list[dict[str, Any]]:
        """Seed samples in the ready project and wait until they succeeded (as the control API renders them)."""
        c, pid = self.sandbox.control, self.sandbox.info.project_id
        c.set_settings(sample_delay=0)
        ids = [c.seed_sample(pid, f"{prefix}{i}", r1_size=r1_size, r2_size=r2_size, seed=i)["id"] for i in range(n)]

        def done() -> list[dict[str, Any]] | None:
            by_id = {s["id"]: s for s in c.samples(pid)}
            found = [by_id[i] for i in ids]
            return found if all(s["last_status"]["status"] == "succeeded" for s in found) else None

        return wait_for(done, timeout=20, message=f"{n} seeded samples to succeed")

    def same_external_id(self, samples: list[dict[str, Any]], external_id: str) -> None:
        for s in samples:
            body = {"sample_id": s["id"], "external_id": external_id}
            self.sandbox.control.api("POST", "/_sandbox/legacy/external-ids", body)
            s["client_id"] = external_id

    def credential(self, kind: str) -> Path:
        """A key file: "key" holds the API key, "login" the email and password of the JWT flow."""
        path = self.tmp / f"legacy-{kind}.cred"
        key = self.sandbox.info.api_key
        path.write_text(key if kind == "key" else json.dumps({"email": LEGACY_EMAIL, "password": key}))
        return path

    def source(self, view_id: int, api: str = "legacy-projects", credential: str = "login") -> ProjectSource:
        return ProjectSource(id=str(view_id), api=api, host=self.api_url, api_key_file=self.credential(credential))

    def config(self, source: ProjectSource, **download: Any) -> Config:
        return Config(
            file=self.tmp / "transferd.toml",
            gencove=GencoveConfig(host=self.api_url),
            download=DownloadConfig(destination=self.tmp / "mirror", projects=(source,), concurrency=4, **download),
        )

    def api_log(self, since: int) -> list[dict[str, Any]]:
        return [e for e in self.sandbox.control.log(target="api", since=since)]


def legacy_name(sample: dict[str, Any], f: dict[str, Any]) -> str:
    """The legacy file name the sandbox gives a deliverable: the v2 UUID replaced by the legacy id."""
    return f["filename"].replace(sample["id"], str(legacy_id(sample["id"])))


def assert_mirrored(root: Path, samples: list[dict[str, Any]], types: tuple[str, ...]) -> int:
    """Each sample's files of these (v2) types are at the default path with the platform's bytes."""
    n = 0
    for s in samples:
        lid = str(legacy_id(s["id"]))
        for f in s["files"]:
            if f["file_type"] not in types:
                continue
            path = root / s["client_id"] / lid / legacy_name(s, f)
            assert path.is_file(), f"missing {path}"
            assert sha256_file(path) == f["checksum_sha256"], path
            n += 1
    assert not list(root.rglob(".*.part")), "a .part file was left behind"
    return n
