"""The soak's sequencers: seeded run plans (what to write, in which order, and what must come of it) and the
writers that play them out on disk the way instruments do.

Content: every FASTQ is real gzip. To keep the driver cheap on a small machine, files are concatenations of
gzip members (valid multi-member gzip, as `cat a.fastq.gz b.fastq.gz` makes): a small member unique to the file
followed by members drawn from a seeded pool of different sizes, so no two files are alike and no offset mix-up
could go unnoticed. The expected sha256 of every object (the concatenation of a sample's read files in upload
order) is computed from the bytes before they are written, so a run folder deleted later can still be judged.

Writing: FASTQs grow in slices over several seconds (never cut at a gzip member boundary, so a half-written
file is never a complete gzip stream), producer markers come last, log folders first. Plain drops (no markers)
are written file by file under temporary names, as copy tools do.

Expectations per sample: "go" (must be uploaded byte-identical, assigned once, mirrored), "never" (must not be
uploaded at all: unfinished runs, truncated gzip, zero-byte files, broken manifests, unreadable files) and
"maybe" (its run folder is deleted during the upload: either nothing is assigned, or exactly the right bytes).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from transferd.synthetic import fastq_records

KiB = 1024
MiB = 1024 * KiB

# Sample names that exercise the right-to-left name parser: "_" (becomes "-"), dots, dashes, "_R1_"/"_L00x"/
# "_S<n>" inside the name. Each is unique after "_" -> "-", so two of them never collide in one run.
AWKWARD_SAMPLES = (
    "Tumor_A",
    "NA12878.rep-2",
    "pt_R1_ctl",
    "lib_L002-b",
    "x_S1",
    "Normal_B_R2_x",
    "HG002.v1.2",
    "ctl-1_S01-a",
    "mix.R1.only",
    "a_b_c_d",
    "Sample-42",
    "Q_R2_001x",
)
PLAIN_SAMPLES = ("ALPHA", "Beta-2", "gamma.3", "DELTA-x", "eps1lon", "Zeta.v2", "eta", "theta-9")
# Run-folder name endings: spaces and non-ASCII (a watch root may be an SMB share named by people).
AWKWARD_RUN_SUFFIXES = ("", "", "", " Müller lab", " run 7", "_Ångström", " (rerun)", "_naïve café", " 東京")
MANIFEST_CLIENTS = ("PatientX", "PatientY", "Donor.7", "ctrl-neg", "NA24385", "trio-mom", "trio-dad", "P-001")


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the writer does, in order. `rel` is relative to the watch root."""

    op: str  # mkdir | file | text | symlink | chmod | sleep | rename_in
    rel: str = ""
    data: bytes = b""
    chunked: bool = False  # file: grow in slices over time (else: temp name + rename, as a copy tool does)
    target: str = ""  # symlink target; rename_in: the hidden staging folder
    mode: int = 0
    seconds: float = 0.0
    ends: tuple[int, ...] = ()  # file: offsets where gzip members end (never cut a slice there)


@dataclass(slots=True)
class SampleExpect:
    run: str  # the run plan's id
    client_id: str
    expect: str  # go | never | maybe
    reason: str
    dest_r1: str
    dest_r2: str | None
    sha_r1: str
    sha_r2: str | None
    size_r1: int
    size_r2: int
    alt_sha_r1: str | None = None  # also acceptable (a source replaced during the upload: old or new, not a mix)

    def r1_ok(self, sha: str | None) -> bool:
        return sha is not None and sha in (self.sha_r1, self.alt_sha_r1)

    @property
    def size(self) -> int:
        return self.size_r1 + self.size_r2

    def paths(self) -> list[str]:
        return [p for p in (self.dest_r1, self.dest_r2) if p]


@dataclass(slots=True)
class RunPlan:
    id: str
    root: int  # index of the watch root
    folder: str  # the run folder (relative to the root); for a root-level manifest, the manifest's name
    unit: str  # the run name the daemon uses in gncv paths
    analysis: str | None
    kind: str
    gncv_folder: str  # gncv://<destination>/<unit>[/<analysis>]
    steps: list[Step] = field(default_factory=list)
    samples: list[SampleExpect] = field(default_factory=list)
    never_folder: bool = False  # nothing at all may be uploaded under gncv_folder
    delete_during_upload: bool = False
    rewrite_during_upload: list[Step] = field(default_factory=list)  # atomic replacements once the upload runs
    fix_after: list[Step] = field(default_factory=list)  # steps played a while after the run is written
    broken_manifest: str | None = None  # rel path of a manifest whose errors must be reported with line numbers
    # Identity actions, played once every sample of the run is assigned (docs/IDENTITY.md): "rename" the run
    # folder to `moved_to`, or "topup" (append `topup_data` to `topup_rel`, a FASTQ that grows after delivery).
    after_assigned: str = ""
    moved_to: str = ""
    topup_rel: str = ""
    topup_data: bytes = b""
    held_expect: list[tuple[str, str]] = field(default_factory=list)  # (gncv folder/client_id, reason) to report
    # "reuse": the folder is deleted and these steps write it again with other data; these samples must then go
    # as a new delivery under `<gncv_folder>@<first seen>` (their destinations are learnt from the sandbox).
    reuse_steps: list[Step] = field(default_factory=list)
    reuse_samples: list[SampleExpect] = field(default_factory=list)
    bytes: int = 0
    # filled by the writer
    written_at: float | None = None
    deleted_at: float | None = None
    notes: list[str] = field(default_factory=list)


class Pool:
    """Seeded gzip members of varied sizes; files are a unique small member plus a random draw of these."""

    def __init__(self, seed: int, members: int = 40, min_reads: int = 150, max_reads: int = 2500) -> None:
        rng = random.Random(seed)
        self.members: list[bytes] = []
        for i in range(members):
            reads = rng.randint(min_reads, max_reads)
            level = rng.choice((0, 1, 1, 6))  # stored blocks make big files cheaply; both are real gzip
            self.members.append(gzip.compress(fastq_records(reads, seed * 1000 + i), compresslevel=level, mtime=0))

    def content(self, rng: random.Random, size: int, unique: int) -> tuple[bytes, list[int]]:
        """About `size` bytes of valid gzip FASTQ; returns (data, member end offsets)."""
        head = gzip.compress(fastq_records(rng.randint(2, 6), unique & 0x7FFFFFFF), compresslevel=1, mtime=0)
        parts = [head]
        ends = [len(head)]
        total = len(head)
        while total < size:
            member = rng.choice(self.members)
            parts.append(member)
            total += len(member)
            ends.append(total)
        return b"".join(parts), ends


def _sha(chunks: list[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


class Planner:
    """Draws run plans from a seeded RNG. `scale` multiplies file sizes."""

    KINDS = (
        # (kind, weight)
        ("bclconvert", 30),
        ("novaseqx", 12),
        ("manifest", 12),
        ("root_manifest", 5),
        ("plain", 8),
        ("instrument", 6),
        ("unfinished", 6),
        ("broken_manifest", 5),
        ("deleted", 4),
        ("bad_samples", 8),
        ("unreadable", 4),
        ("bulk", 0.5),  # > 200 tiny samples in one run: assignment batches, sheet paging (long soaks only)
        ("rewritten", 4),  # a source replaced (new inode, new bytes) while it uploads: old or new, never a mix
        ("renamed", 3),  # assigned, then the folder renamed: nothing uploaded again, every sample held
        ("topped_up", 3),  # assigned, then a FASTQ grows: held (grown), nothing uploaded again
        ("bad_name", 3),  # a file name that is not valid UTF-8 beside good samples: only that sample fails
        ("reused", 3),  # assigned, then the folder deleted and written again with other data: a new delivery
    )

    def __init__(self, seed: int, destinations: list[str], scale: float = 1.0, permissions_meaningful: bool = True,
                 bulk: bool = False):  # fmt: skip
        self.rng = random.Random(seed)
        self.seed = seed
        self.pool = Pool(seed)
        self.destinations = destinations
        self.scale = scale
        self.permissions_meaningful = permissions_meaningful
        self.counter = 0
        self._unique = seed * 7919
        self.bulk = bulk

    def kinds(self) -> list[tuple[str, float]]:
        """The run kinds this soak draws from, with their weights."""
        out = list(self.KINDS)
        if not self.bulk:
            out = [k for k in out if k[0] != "bulk"]
        if not self.permissions_meaningful:
            out = [k for k in out if k[0] != "unreadable"]
        return out

    # -- helpers ---------------------------------------------------------------------------------------------
    def _size(self, lo_kib: int, hi_kib: int) -> int:
        return int(self.rng.randint(lo_kib, hi_kib) * KiB * self.scale)

    def _content(self, size: int) -> tuple[bytes, list[int]]:
        self._unique += 1
        return self.pool.content(self.rng, size, self._unique)

    def _run_name(self, awkward: bool = True) -> str:
        self.counter += 1
        instrument = self.rng.choice(("A01234", "M05678", "VH00123", "NB551"))
        suffix = self.rng.choice(AWKWARD_RUN_SUFFIXES) if awkward else ""
        return f"2601{self.counter % 28 + 1:02d}_{instrument}_{self.seed % 10000:04d}_{self.counter:04d}{suffix}"

    def _expect(
        self, plan: RunPlan, client_id: str, expect: str, reason: str, r1: list[bytes], r2: list[bytes]
    ) -> SampleExpect:
        s = SampleExpect(
            run=plan.id,
            client_id=client_id,
            expect=expect,
            reason=reason,
            dest_r1=f"{plan.gncv_folder}/{client_id}_R1.fastq.gz",
            dest_r2=f"{plan.gncv_folder}/{client_id}_R2.fastq.gz" if r2 else None,
            sha_r1=_sha(r1),
            sha_r2=_sha(r2) if r2 else None,
            size_r1=sum(map(len, r1)),
            size_r2=sum(map(len, r2)),
        )
        plan.samples.append(s)
        plan.bytes += s.size
        return s

    def _file(self, rel: str, data: bytes, chunked: bool = True, ends: list[int] | tuple[int, ...] = ()) -> Step:
        return Step("file", rel, data=data, chunked=chunked, ends=tuple(ends))

    # -- plans -----------------------------------------------------------------------------------------------
    def next_plan(self, kind: str | None = None) -> RunPlan:
        if kind is None:
            kinds, weights = zip(*self.kinds(), strict=True)
            kind = self.rng.choices(kinds, weights)[0]
        root = self.rng.randrange(len(self.destinations))
        build = getattr(self, f"_plan_{kind}")
        plan: RunPlan = build(root)
        return plan

    def _new(self, root: int, kind: str, folder: str, unit: str | None = None, analysis: str | None = None) -> RunPlan:
        unit = unit or folder
        gncv = f"{self.destinations[root]}/{unit}" + (f"/{analysis}" if analysis else "")
        return RunPlan(id=f"{kind}:{folder}", root=root, folder=folder, unit=unit, analysis=analysis, kind=kind,
                       gncv_folder=gncv)  # fmt: skip

    def _illumina_samples(
        self, plan: RunPlan, base: str, n: int, lanes: int, size: tuple[int, int], expect: str = "go", reason: str = ""
    ) -> list[tuple[Step, ...]]:
        """FASTQ steps for n samples (lanes, sometimes 2 chunks per lane), with expectations recorded."""
        names = self.rng.sample(AWKWARD_SAMPLES, n)
        chunks = 2 if self.rng.random() < 0.15 else 1
        steps: list[tuple[Step, ...]] = []
        for s_num, name in enumerate(names, start=1):
            reads: dict[int, list[bytes]] = {1: [], 2: []}
            sample_steps = []
            for lane in range(1, lanes + 1):
                for chunk in range(1, chunks + 1):
                    for r in (1, 2):
                        data, ends = self._content(self._size(*size))
                        reads[r].append(data)
                        rel = f"{base}/{name}_S{s_num}_L{lane:03d}_R{r}_{chunk:03d}.fastq.gz"
                        sample_steps.append(self._file(rel, data, ends=ends))
            self._expect(plan, name.replace("_", "-"), expect, reason, reads[1], reads[2])
            steps.append(tuple(sample_steps))
        return steps

    def _extras(self, base: str, lanes: int, undetermined: bool, index: bool, n: int) -> list[Step]:
        steps = []
        if undetermined:
            for lane in range(1, lanes + 1):
                for r in (1, 2):
                    data, _ = self._content(self._size(20, 80))
                    steps.append(self._file(f"{base}/Undetermined_S0_L{lane:03d}_R{r}_001.fastq.gz", data, False))
        if index:
            data, _ = self._content(self._size(10, 30))
            steps.append(self._file(f"{base}/{AWKWARD_SAMPLES[0]}_S{n + 1}_L001_I1_001.fastq.gz", data, False))
        return steps

    def _interleave(self, groups: list[tuple[Step, ...]]) -> list[Step]:
        """Instruments write samples concurrently: interleave the samples' files (order within a sample kept)."""
        queues = [list(g) for g in groups]
        out: list[Step] = []
        while any(queues):
            q = self.rng.choice([q for q in queues if q])
            out.append(q.pop(0))
        return out

    def _plan_bclconvert(
        self, root: int, *, complete: bool = True, kind: str = "bclconvert", big: bool | None = None
    ) -> RunPlan:
        folder = self._run_name()
        plan = self._new(root, kind, folder)
        lanes = self.rng.choice((1, 2, 2, 4))
        n = self.rng.randint(2, 5)
        big = self.rng.random() < 0.3 if big is None else big
        size = (1500, 4000) if big else (100, 1200)
        expect = "go" if complete else "never"
        # BCL Convert writes its Logs/ folder first and Logs/FastqComplete.txt last.
        plan.steps += [Step("mkdir", f"{folder}/Logs"), Step("text", f"{folder}/Logs/Info.log", b"started\n")]
        groups = self._illumina_samples(plan, folder, n, lanes, size, expect, "unfinished run" if not complete else "")
        plan.steps += self._interleave(groups)
        plan.steps += self._extras(folder, lanes, self.rng.random() < 0.7, self.rng.random() < 0.3, n)
        if self.rng.random() < 0.3:  # symlink oddities beside real data: a folder loop, a dangling and a self link
            plan.steps += [
                Step("symlink", f"{folder}/loop", target="."),
                Step("symlink", f"{folder}/ghost_S90_L001_R1_001.fastq.gz", target="/nonexistent/ghost.fastq.gz"),
                Step("symlink", f"{folder}/self_S91_L001_R1_001.fastq.gz", target="self_S91_L001_R1_001.fastq.gz"),
            ]
            plan.notes.append("symlink loop, dangling and self-referencing links")
        plan.steps += [Step("mkdir", f"{folder}/Reports"), Step("text", f"{folder}/Reports/Demultiplex_Stats.csv",
                                                                 b"Lane,SampleID\n")]  # fmt: skip
        if complete:
            plan.steps.append(Step("text", f"{folder}/Logs/FastqComplete.txt", b"done\n"))
        else:
            plan.never_folder = True
        return plan

    def _plan_unfinished(self, root: int) -> RunPlan:
        flavour = self.rng.choice(("bclconvert", "novaseqx", "instrument"))
        if flavour == "bclconvert":
            return self._plan_bclconvert(root, complete=False, kind="unfinished")
        if flavour == "novaseqx":
            return self._plan_novaseqx(root, complete=False, kind="unfinished")
        return self._plan_instrument(root, complete=False, kind="unfinished")

    def _plan_novaseqx(self, root: int, *, complete: bool = True, kind: str = "novaseqx") -> RunPlan:
        folder = self._run_name()
        plan = self._new(root, kind, folder, analysis="1")
        base = f"{folder}/Analysis/1/Data/BCLConvert/fastq"
        plan.steps += [
            Step("text", f"{folder}/RunInfo.xml", b"<RunInfo/>\n"),
            Step("text", f"{folder}/RunParameters.xml", b"<RunParameters/>\n"),
            Step("mkdir", base),
        ]
        n = self.rng.randint(2, 4)
        expect = "go" if complete else "never"
        groups = self._illumina_samples(plan, base, n, 2, (100, 1500), expect, "" if complete else "unfinished run")
        plan.steps += self._interleave(groups)
        plan.steps += self._extras(base, 2, True, False, n)
        plan.steps.append(Step("text", f"{folder}/Analysis/1/Data/Secondary_Analysis_Complete.txt", b"done\n"))
        if complete:
            plan.steps.append(Step("text", f"{folder}/Analysis/1/CopyComplete.txt", b""))
        else:
            plan.never_folder = True
        return plan

    def _plan_instrument(self, root: int, *, complete: bool = True, kind: str = "instrument") -> RunPlan:
        folder = self._run_name()
        plan = self._new(root, kind, folder)
        base = f"{folder}/Data/Intensities/BaseCalls"
        plan.steps += [Step("text", f"{folder}/RunInfo.xml", b"<RunInfo/>\n"), Step("mkdir", base)]
        n = self.rng.randint(1, 3)
        expect = "go" if complete else "never"
        names = self.rng.sample(AWKWARD_SAMPLES, n)
        groups = []
        for s_num, name in enumerate(names, start=1):
            reads: dict[int, list[bytes]] = {1: [], 2: []}
            steps = []
            for r in (1, 2):  # MiSeq: no lane splitting
                data, ends = self._content(self._size(100, 900))
                reads[r].append(data)
                steps.append(self._file(f"{base}/{name}_S{s_num}_L001_R{r}_001.fastq.gz", data, ends=ends))
            self._expect(plan, name.replace("_", "-"), expect, "" if complete else "unfinished run", reads[1], reads[2])
            groups.append(tuple(steps))
        plan.steps += self._interleave(groups)
        if complete:
            plan.steps.append(Step("text", f"{folder}/CopyComplete.txt", b""))
        else:
            plan.never_folder = True
        return plan

    def _manifest_files(
        self, plan: RunPlan, folder_rel: str, data_rel: str, expect: str = "go"
    ) -> tuple[list[Step], list[str]]:
        """Chunked FASTQs with names no parser would take, and the manifest rows listing them."""
        n = self.rng.randint(1, 3)
        clients = self.rng.sample(MANIFEST_CLIENTS, n)
        steps: list[Step] = []
        rows = ["client_id,r_notation,path"]
        for client in clients:
            chunks = self.rng.randint(1, 3)
            reads: dict[str, list[bytes]] = {"R1": [], "R2": []}
            for c in range(1, chunks + 1):
                for r in ("R1", "R2"):
                    data, ends = self._content(self._size(100, 1200))
                    reads[r].append(data)
                    name = f"{client.lower()}.part{c}.{r.lower()}.fq.gz"
                    steps.append(self._file(f"{folder_rel}/{data_rel}/{name}", data, ends=ends))
                    rows.append(f"{client},{r},{data_rel}/{name}")
            self._expect(plan, client, expect, plan.kind if expect != "go" else "", reads["R1"], reads["R2"])
        header, body = rows[0], rows[1:]
        # Row order is the concatenation order per (client, read) only: mix the clients, keep chunks ascending.
        self.rng.shuffle(body)
        body.sort(key=_chunk_of)
        return steps, [header, *body]

    def _plan_manifest(self, root: int) -> RunPlan:
        folder = f"drop {self._run_name(awkward=False)[-4:]}" + self.rng.choice(("", "-ñ", " über"))
        plan = self._new(root, "manifest", folder)
        steps, rows = self._manifest_files(plan, folder, "fastq")
        plan.steps += steps
        plan.steps.append(Step("text", f"{folder}/samples.fastq-map.csv", ("\n".join(rows) + "\n").encode()))
        return plan

    def _plan_root_manifest(self, root: int) -> RunPlan:
        stem = f"rootdrop-{self._run_name(awkward=False)[-4:]}"
        plan = self._new(root, "root_manifest", f"{stem}.fastq-map.csv", unit=stem)
        staging = f".staging-{stem}"  # hidden: not a run folder of its own
        steps, rows = self._manifest_files(plan, "", staging)
        plan.steps += [Step(s.op, s.rel.lstrip("/"), s.data, s.chunked, ends=s.ends) for s in steps]
        plan.steps.append(Step("text", f"{stem}.fastq-map.csv", ("\n".join(rows) + "\n").encode()))
        return plan

    def _plan_broken_manifest(self, root: int) -> RunPlan:
        folder = f"baddrop {self._run_name(awkward=False)[-4:]}"
        plan = self._new(root, "broken_manifest", folder)
        steps, rows = self._manifest_files(plan, folder, "fastq", expect="never")
        plan.steps += steps
        first_path = rows[1].split(",")[2]
        bad_rows = [
            "Bad_Client,R1,fastq/x.fq.gz",  # '_' in client_id
            "C1,R3,fastq/nope.fq.gz",  # bad r_notation, missing file
            "C2,R1,https://example.org/a.fq.gz",  # URL
            f"C3,R1,{first_path}",  # duplicate path
            "C4,R1,fastq/notes.txt",  # bad ending
            ",R1,",  # empty client_id and path
            "C5,R1",  # two columns
        ]
        self.rng.shuffle(bad_rows)
        text = "\n".join([*rows, *bad_rows]) + "\n"
        plan.steps.append(Step("text", f"{folder}/samples.fastq-map.csv", text.encode()))
        plan.never_folder = True
        plan.broken_manifest = f"{folder}/samples.fastq-map.csv"
        return plan

    def _plan_plain(self, root: int) -> RunPlan:
        self.counter += 1
        folder = f"plain drop {self.seed % 10000:04d}-{self.counter:04d}" + self.rng.choice(("", " ä", "_x.y"))
        plan = self._new(root, "plain", folder)
        staging = f".incoming-{self.counter}"
        names = self.rng.sample(PLAIN_SAMPLES, self.rng.randint(1, 3))
        plan.steps.append(Step("mkdir", staging))
        for name in names:
            reads: dict[int, list[bytes]] = {1: [], 2: []}
            for r in (1, 2):
                data, ends = self._content(self._size(100, 1000))
                reads[r].append(data)
                plan.steps.append(self._file(f"{staging}/{name}_R{r}.fastq.gz", data, ends=ends))
            self._expect(plan, name, "go", "", reads[1], reads[2])
        # A copy tool finishing into place: the whole folder appears at once.
        plan.steps.append(Step("rename_in", folder, target=staging))
        return plan

    def _plan_deleted(self, root: int) -> RunPlan:
        plan = self._plan_bclconvert(root, kind="deleted", big=True)
        plan.id = f"deleted:{plan.folder}"
        plan.delete_during_upload = True
        for s in plan.samples:
            s.expect, s.reason, s.run = "maybe", "run folder deleted during the upload", plan.id
        return plan

    def _plan_rewritten(self, root: int) -> RunPlan:
        """A big BCL Convert run; once its upload runs, lane 1 of the first sample's R1 is replaced atomically
        (as a re-run of the conversion or a copy tool would). The R1 object must hold the old or the new bytes."""
        plan = self._plan_bclconvert(root, kind="rewritten", big=True)
        plan.id = f"rewritten:{plan.folder}"
        first = plan.samples[0]  # S number 1
        s1_r1 = re.compile(r"_S1_L\d{3}_R1_\d{3}\.fastq\.gz$")  # names may hold "_R1_" themselves
        r1 = [s for s in plan.steps if s.op == "file" and s1_r1.search(s.rel)]
        new, ends = self._content(len(r1[0].data))
        h = hashlib.sha256(new)
        for s in r1[1:]:
            h.update(s.data)
        first.alt_sha_r1 = h.hexdigest()
        first.reason = f"{r1[0].rel.rsplit('/', 1)[-1]} replaced during the upload"
        plan.rewrite_during_upload = [Step("file", r1[0].rel, data=new, chunked=False, ends=tuple(ends))]
        return plan

    def _plan_bad_samples(self, root: int) -> RunPlan:
        """A complete BCL Convert run with good samples plus a truncated gzip, a zero-byte file, an R1-only one."""
        plan = self._plan_bclconvert(root, kind="bad_samples")
        plan.id = f"bad_samples:{plan.folder}"
        folder = plan.folder
        marker = plan.steps.pop()  # written last again below
        n0 = 70
        bad = self.rng.sample(("truncated", "zero_byte", "r1_only", "bad_gzip_tail"), self.rng.randint(1, 3))
        for i, what in enumerate(bad):
            name = f"{what.replace('_', '-')}{self.rng.randint(0, 99)}"
            s_num = n0 + i
            r1, ends1 = self._content(self._size(60, 300))
            r2, ends2 = self._content(self._size(60, 300))
            if what == "truncated":
                # cut strictly inside the last member
                start = ends2[-2]
                cut = self.rng.randint(start + 20, ends2[-1] - 20)
                r2 = r2[:cut]
            elif what == "zero_byte":
                r2 = b""
            elif what == "bad_gzip_tail":
                r2 = r2 + b"\x00garbage-after-the-last-member\n"
            plan.steps.append(self._file(f"{folder}/{name}_S{s_num}_L001_R1_001.fastq.gz", r1, ends=ends1))
            if what != "r1_only":
                rel2 = f"{folder}/{name}_S{s_num}_L001_R2_001.fastq.gz"
                plan.steps.append(self._file(rel2, r2, chunked=bool(r2), ends=[e for e in ends2 if e <= len(r2)]))
            self._expect(plan, name, "never", what, [r1], [r2] if what != "r1_only" else [])
        plan.steps.append(marker)
        return plan

    def _plan_renamed(self, root: int) -> RunPlan:
        """Delivered, then the run folder is renamed (an operator tidying up): the same files under a new path
        must not go again; each sample is held (duplicate) naming the first delivery."""
        plan = self._plan_bclconvert(root, kind="renamed")
        plan.id = f"renamed:{plan.folder}"
        plan.after_assigned = "rename"
        plan.moved_to = f"{plan.folder} moved"
        moved = f"{self.destinations[root]}/{plan.moved_to}"
        plan.held_expect = [(f"{moved}/{s.client_id}", "duplicate") for s in plan.samples]
        return plan

    def _plan_topped_up(self, root: int) -> RunPlan:
        """Delivered, then one R1 file grows by a gzip member (a late writer): held (grown), nothing re-sent."""
        plan = self._plan_bclconvert(root, kind="topped_up")
        plan.id = f"topped_up:{plan.folder}"
        first = plan.samples[0]  # S number 1
        s1_r1 = re.compile(r"_S1_L\d{3}_R1_\d{3}\.fastq\.gz$")
        plan.topup_rel = next(s.rel for s in plan.steps if s.op == "file" and s1_r1.search(s.rel))
        plan.topup_data, _ = self._content(self._size(5, 20))
        plan.after_assigned = "topup"
        plan.held_expect = [(f"{plan.gncv_folder}/{first.client_id}", "grown")]
        return plan

    def _plan_reused(self, root: int) -> RunPlan:
        """Delivered, then the folder is deleted and the same run name written again with other data (a
        sequencer reusing a run name): the new samples must go, once, as a new delivery beside the first."""
        plan = self._plan_bclconvert(root, kind="reused")
        plan.id = f"reused:{plan.folder}"
        second = self._plan_bclconvert(root, kind="reused")
        old, new = f"{second.folder}/", f"{plan.folder}/"
        plan.reuse_steps = [replace(st, rel=new + st.rel[len(old):]) if st.rel.startswith(old) else st
                            for st in second.steps]  # fmt: skip
        for sx in second.samples:
            sx.run = plan.id
        plan.reuse_samples = second.samples
        plan.after_assigned = "reuse"
        return plan

    def _plan_bad_name(self, root: int) -> RunPlan:
        """A complete run whose extra sample's file names are not valid UTF-8 (bytes from a Latin-1 host): that
        sample never goes, and its problem shows the name with the bytes escaped; the others go."""
        plan = self._plan_bclconvert(root, kind="bad_name")
        plan.id = f"bad_name:{plan.folder}"
        marker = plan.steps.pop()  # written last again below
        stem = os.fsdecode(b"caf\xe9-" + str(self.rng.randint(0, 99)).encode())
        reads = []
        for r in (1, 2):
            data, ends = self._content(self._size(30, 120))
            plan.steps.append(self._file(f"{plan.folder}/{stem}_S80_L001_R{r}_001.fastq.gz", data, ends=ends))
            reads.append(data)
        escaped = stem.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        self._expect(plan, escaped, "never", "file name is not valid UTF-8", [reads[0]], [reads[1]])
        plan.steps.append(marker)
        return plan

    def _plan_bulk(self, root: int) -> RunPlan:
        """One BCL Convert run with 205 tiny samples: more than one assignment batch (200) and sheet page."""
        folder = self._run_name()
        plan = self._new(root, "bulk", folder)
        plan.steps += [Step("mkdir", f"{folder}/Logs"), Step("text", f"{folder}/Logs/Info.log", b"started\n")]
        for i in range(1, 206):
            name = f"bulk_{i:03d}" if i % 2 else f"Bulk.{i:03d}"
            reads: dict[int, list[bytes]] = {1: [], 2: []}
            for r in (1, 2):
                data = gzip.compress(fastq_records(3, self.seed * 100_000 + i * 2 + r), compresslevel=1, mtime=0)
                reads[r].append(data)
                plan.steps.append(self._file(f"{folder}/{name}_S{i}_L001_R{r}_001.fastq.gz", data, chunked=False))
            self._expect(plan, name.replace("_", "-"), "go", "", reads[1], reads[2])
        plan.steps.append(Step("text", f"{folder}/Logs/FastqComplete.txt", b"done\n"))
        return plan

    def _plan_unreadable(self, root: int) -> RunPlan:
        """A sample whose file cannot be read when the run completes: one gets fixed later (must then go), the
        other stays unreadable (must never go)."""
        plan = self._plan_bclconvert(root, kind="unreadable")
        plan.id = f"unreadable:{plan.folder}"
        folder = plan.folder
        marker = plan.steps.pop()
        fixed = self.rng.random() < 0.5
        name = "locked-fixed" if fixed else "locked"
        r1, ends1 = self._content(self._size(60, 300))
        r2, ends2 = self._content(self._size(60, 300))
        rel2 = f"{folder}/{name}_S80_L001_R2_001.fastq.gz"
        plan.steps += [
            self._file(f"{folder}/{name}_S80_L001_R1_001.fastq.gz", r1, ends=ends1),
            self._file(rel2, r2, ends=ends2),
            Step("chmod", rel2, mode=0o000),
            marker,
        ]
        if fixed:
            plan.fix_after = [Step("sleep", seconds=self.rng.uniform(4, 10)), Step("chmod", rel2, mode=0o644)]
        self._expect(plan, name, "go" if fixed else "never", "unreadable, fixed later" if fixed else "unreadable",
                     [r1], [r2])  # fmt: skip
        return plan


def _chunk_of(row: str) -> int:
    path = row.split(",")[2]
    marker = ".part"
    i = path.find(marker)
    return int(path[i + len(marker) : path.index(".", i + len(marker))]) if i >= 0 else 0


# -- writing ----------------------------------------------------------------------------------------------------
class RootGate:
    """Writers hold a root while touching it; a fault takes it away (rename) only between writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.away_path = path.with_name(path.name + ".unmounted")
        self._cond = threading.Condition()
        self._active = 0
        self._away = False
        self._wanted = False

    @contextlib.contextmanager
    def hold(self) -> Iterator[Path]:
        with self._cond:
            while self._away or self._wanted:
                self._cond.wait()
            self._active += 1
        try:
            yield self.path
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def take_away(self) -> None:
        with self._cond:
            self._wanted = True
            while self._active:
                self._cond.wait()
            os.rename(self.path, self.away_path)
            self._away = True
            self._wanted = False

    def bring_back(self) -> None:
        with self._cond:
            if self._away:
                os.rename(self.away_path, self.path)
                self._away = False
            self._cond.notify_all()

    @property
    def away(self) -> bool:
        return self._away


def _slices(rng: random.Random, data: bytes, ends: set[int], pieces: int) -> list[bytes]:
    """Cut `data` into about `pieces` slices, never at a gzip member end (a partial file is never whole)."""
    if pieces <= 1 or len(data) < 64:
        return [data]
    cuts = set()
    for _ in range(pieces - 1):
        c = rng.randint(1, len(data) - 1)
        while c in ends:
            c += 1
        if 0 < c < len(data):
            cuts.add(c)
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


class Writer:
    """Plays run plans out on disk. `pause` scales the time between slices (instruments are slow)."""

    def __init__(self, roots: list[RootGate], seed: int, pause: float = 1.0) -> None:
        self.roots = roots
        self.rng = random.Random(seed ^ 0x5EED)
        self._lock = threading.Lock()
        self.pause = pause
        self.bytes_written = 0

    def _r(self) -> random.Random:
        with self._lock:
            return random.Random(self.rng.random())

    def write(self, plan: RunPlan, stop: threading.Event | None = None) -> None:
        """Play the plan. Consecutive growing files grow together (an instrument writes its FASTQs in parallel):
        one slice of each, in a shuffled order, then a pause, until all are whole."""
        rng = self._r()
        gate = self.roots[plan.root]
        batch: list[Step] = []
        for step in [*plan.steps, Step("end")]:
            if step.op == "file" and step.chunked and step.data:
                batch.append(step)
                continue
            if batch:
                self._grow_together(gate, batch, rng, stop)
                batch = []
            if step.op != "end":
                self._play(gate, step, rng, stop)
        plan.written_at = time.time()

    def _grow_together(self, gate: RootGate, steps: list[Step], rng: random.Random,
                       stop: threading.Event | None) -> None:  # fmt: skip
        pending = []
        for step in steps:
            pieces = max(2, min(8, len(step.data) // (256 * KiB) + 2))
            pending.append((step, _slices(rng, step.data, set(step.ends), pieces), [0]))
        while pending:
            rng.shuffle(pending)
            for step, slices, done in pending:
                i = done[0]
                with gate.hold() as root:
                    path = root / step.rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with open(path, "ab" if i else "wb") as fh:
                        fh.write(slices[i])
                self.bytes_written += len(slices[i])
                done[0] += 1
            pending = [p for p in pending if p[2][0] < len(p[1])]
            if pending:
                _sleep(rng.uniform(0.1, 0.6) * self.pause, stop)

    def play_steps(self, plan: RunPlan, steps: list[Step], stop: threading.Event | None = None) -> None:
        rng = self._r()
        for step in steps:
            self._play(self.roots[plan.root], step, rng, stop)

    def _play(self, gate: RootGate, step: Step, rng: random.Random, stop: threading.Event | None) -> None:
        if step.op == "sleep":
            _sleep(step.seconds, stop)
            return
        if step.op == "file" and step.chunked and len(step.data) > 0:
            pieces = max(2, min(8, len(step.data) // (256 * KiB) + 2))
            slices = _slices(rng, step.data, set(step.ends), pieces)
            for i, piece in enumerate(slices):
                with gate.hold() as root:
                    path = root / step.rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with open(path, "ab" if i else "wb") as fh:
                        fh.write(piece)
                self.bytes_written += len(piece)
                if i < len(slices) - 1:
                    _sleep(rng.uniform(0.05, 0.5) * self.pause, stop)
            return
        with gate.hold() as root:
            path = root / step.rel
            if step.op == "mkdir":
                path.mkdir(parents=True, exist_ok=True)
            elif step.op in ("file", "text"):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(step.data)
                os.replace(tmp, path)
                self.bytes_written += len(step.data)
            elif step.op == "symlink":
                path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.symlink(step.target, path)
            elif step.op == "chmod":
                os.chmod(path, step.mode)
            elif step.op == "rename_in":
                os.rename(root / step.target, path)
            else:
                raise ValueError(f"unknown step {step.op}")


def _sleep(seconds: float, stop: threading.Event | None) -> None:
    if stop is not None:
        stop.wait(seconds)
    else:
        time.sleep(seconds)


def plan_summary(plans: list[RunPlan]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in plans:
        out[p.kind] = out.get(p.kind, 0) + 1
    return out

